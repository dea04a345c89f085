"""Helpers for the model processor tests: frames from pictures, MTCNN weights and the hand
landmarker fetched once.

Nothing here imports torch, so the batching tests that need no model run without it.
"""

from __future__ import annotations

import atexit
import base64
import functools
import importlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.tools.models import FACENET_PYTORCH, FACENET_PYTORCH_VERSION, download_wheel, fetch_mtcnn_weights

#: The repository root.
ROOT = Path(__file__).resolve().parent.parent


def encoded(picture: np.ndarray | Image.Image, fmt: str = "PNG") -> bytes:
    """``picture`` encoded as ``fmt`` (PNG, BMP and WEBP lossless: decoding gives back the same pixels)."""
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **{"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}.get(fmt, {}))
    return buffer.getvalue()


def frame_data(image: bytes, *, width: int, height: int, fmt: str = "png", frame_id: str = "f-1") -> dict[bytes, bytes]:
    """What ``process_frame`` receives for a frame holding ``image``."""
    return {
        b"frame_id": frame_id.encode(),
        b"camera_id": b"cam-1",
        b"timestamp": b"2024-01-01T00:00:00+00:00",
        b"image_data": base64.b64encode(image),
        b"width": str(width).encode(),
        b"height": str(height).encode(),
        b"format": fmt.encode(),
        b"metadata": b"{}",
        b"trace_context": b"{}",
    }


def picture_frame(picture: np.ndarray, fmt: str = "PNG", frame_id: str = "f-1") -> dict[bytes, bytes]:
    height, width = picture.shape[:2]
    return frame_data(encoded(picture, fmt), width=width, height=height, fmt=fmt.lower(), frame_id=frame_id)


def corrupt_jpeg(picture: np.ndarray) -> bytes:
    """A JPEG cut in half: its header is fine, its data ends early."""
    data = encoded(picture, "JPEG")
    return data[: len(data) // 2]


def _scratch(prefix: str) -> Path:
    """A temporary directory removed when the test session ends."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.cache
def facenet_pytorch_wheel() -> Path:
    """The pinned facenet-pytorch wheel, downloaded once per test session (from PyPI)."""
    requirement = f"{FACENET_PYTORCH}=={FACENET_PYTORCH_VERSION}"
    return download_wheel(requirement, "facenet_pytorch-*.whl", _scratch("frameflow-wheels-"))


@functools.cache
def mtcnn_weights() -> Path:
    """The MTCNN weights, extracted once per test session from that wheel into a temporary model cache."""
    return fetch_mtcnn_weights(_scratch("frameflow-models-"), wheel=facenet_pytorch_wheel())


@functools.cache
def reference_mtcnn_module() -> Any:
    """facenet-pytorch's own ``facenet_pytorch.models.mtcnn``, imported from that wheel (unpacked, not
    installed). Its package ``__init__`` is skipped: it imports ``requests`` for the face recogniser."""
    root = _scratch("frameflow-facenet-")
    with zipfile.ZipFile(facenet_pytorch_wheel()) as wheel:
        wheel.extractall(root, [name for name in wheel.namelist() if name.startswith("facenet_pytorch/")])
    package = types.ModuleType("facenet_pytorch")
    package.__path__ = [str(root / "facenet_pytorch")]
    sys.modules.setdefault("facenet_pytorch", package)
    return importlib.import_module("facenet_pytorch.models.mtcnn")


def close_boxes(a: list[float], b: list[float], tolerance: float = 0.05) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def same_detections(a: dict[str, Any], b: dict[str, Any], key: str, tolerance: float = 0.05) -> bool:
    """Whether two results list the same detections (``key``: ``faces`` or ``objects``), boxes within
    ``tolerance`` pixels and scores within 1e-3: float sums may differ in their last bits between batch sizes."""
    first, second = a[key], b[key]
    if len(first) != len(second):
        return False
    for one, other in zip(first, second, strict=True):
        if one.get("label") != other.get("label") or abs(one["score"] - other["score"]) > 1e-3:
            return False
        if not close_boxes(one["box"], other["box"], tolerance):
            return False
    return True


@functools.cache
def hand_landmarker_task() -> Path:
    """The hand landmarker, built once per test session by ``frameflow models fetch hands`` (the
    mediapipe 0.10.21 wheel from PyPI) into a temporary model cache."""
    root = _scratch("frameflow-models-")
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline.tools.cli", "models", "fetch", "hands", "--dir", str(root)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return root / "hand_landmarker" / "hand_landmarker.task"
