"""Frames per second of each model processor, on the CPU, at batch sizes 1, 4 and 8.

Run from the repository root (torch from the ``ml`` extra, mediapipe from the
``gestures`` extra, the weights from ``frameflow models fetch``)::

    .venv/bin/python -m benchmarks.models

(as a module: run as a script, ``benchmarks/profile.py`` would shadow the standard library's
``profile``, which torch imports). ``--only NAME`` measures the rows whose name contains NAME.

Each measurement is one processor's ``process_batch`` over the same frames
(``--frames`` JPEGs of scikit-image's 512 x 512 astronaut photograph) in batches
of the given size: decoding, conversion, the model and the result dicts, without
Redis, so it is the ceiling a processor can reach. Each figure is the median of
``--runs`` runs after a warm-up, printed as a markdown table.

The object detectors use torchvision's COCO weights when they are in its cache
(or ``FRAMEFLOW_OBJECT_WEIGHTS``), otherwise untrained weights of the same
architecture: the same computation, with the caveat that an untrained detector
keeps its 300 best boxes where a trained one keeps few, so its post-processing
costs a little more.

The gesture processor runs on a photo of a hand (``tests/data/gestures``) three
ways: as one camera's stream (video mode: the landmarker tracks the hand, the
palm detector runs only when it loses it), as frames that all carry one time
stamp (image mode: palm detector and landmarks on every frame, what an
out-of-order frame costs), and on the astronaut, where there is no hand to find.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

# Runnable from the repository root, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from pipeline.tools.models import FETCH_COMMAND, missing_mtcnn_weights, mtcnn_dir
from workers.settings import OBJECT_MODELS, ModelSettings
from workers.torch_runtime import TorchProcessor

BATCH_SIZES = (1, 4, 8)

#: The hand photo of the gesture rows.
HAND_PHOTO = (
    Path(__file__).resolve().parent.parent / "tests/data/gestures/rock/09a619ab-cdf7-4a66-911f-347113f050f1.jpg"
)


class Benchmarked(Protocol):
    """What a measured processor offers (a TorchProcessor, the gesture processor)."""

    def load(self) -> None: ...

    def process_batch(self, frames: list[dict[bytes, bytes]]) -> list[dict | BaseException | None]: ...


#: One table row: its name, what builds its processor (None: cannot run), its weights, its frames.
Row = tuple[str, Callable[[], Benchmarked | None], str, list[dict[bytes, bytes]]]


def picture() -> tuple[np.ndarray, str]:
    try:
        from skimage import data
    except ImportError:
        generator = np.random.default_rng(0)
        return generator.integers(0, 256, (512, 512, 3), dtype=np.uint8), "random 512 x 512 noise"
    return data.astronaut(), "skimage astronaut, 512 x 512 JPEG"


def jpeg_frames(image: np.ndarray, count: int) -> list[dict[bytes, bytes]]:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    encoded = base64.b64encode(buffer.getvalue())
    height, width = image.shape[:2]
    return [
        {
            b"frame_id": f"bench-{index}".encode(),
            b"image_data": encoded,
            b"width": str(width).encode(),
            b"height": str(height).encode(),
            b"format": b"jpeg",
        }
        for index in range(count)
    ]


def processors(settings: ModelSettings) -> list[tuple[str, Callable[[], TorchProcessor | None], str]]:
    """(name, builder, weights) for each torch model; a builder returns None when the model cannot run."""
    from workers.face_detection import FaceDetectionProcessor
    from workers.object_detection import DETECTORS, ObjectDetectionProcessor, torchvision_cache_path

    common = {"capabilities": ["benchmark"], "orchestrator_url": "", "redis_url": "redis://unused"}
    found = []
    for name in OBJECT_MODELS:
        object_settings = dataclasses.replace(settings, object_model=name)
        if settings.object_weights and name == settings.object_model:
            weights = f"checkpoint {Path(settings.object_weights).name}"
        elif torchvision_cache_path(DETECTORS[name][1]).is_file():
            weights = "COCO (torchvision)"
        else:
            weights = "untrained (no COCO weights cached)"

        def build(object_settings: ModelSettings = object_settings, name: str = name) -> TorchProcessor:
            return ObjectDetectionProcessor(
                processor_id=f"bench-{name}", settings=object_settings, random_weights=True, **common
            )

        found.append((name, build, weights))
    faces_ready = not missing_mtcnn_weights(Path(settings.face_weights) if settings.face_weights else mtcnn_dir())

    def build_faces() -> TorchProcessor | None:
        if not faces_ready:
            return None
        return FaceDetectionProcessor(processor_id="bench-faces", settings=settings, **common)

    found.append(("mtcnn (faces)", build_faces, "facenet-pytorch" if faces_ready else f"missing: {FETCH_COMMAND}"))
    return found


def gesture_rows(settings: ModelSettings, count: int) -> list[Row]:
    """The gesture processor's rows (see the module docstring); "-" without mediapipe or its weights."""
    from PIL import Image

    from pipeline.tools.hand_model import hand_landmarker_path

    task = Path(settings.gesture_weights) if settings.gesture_weights else hand_landmarker_path()
    try:
        from workers.gesture_detection import GestureDetectionProcessor
    except ImportError:
        GestureDetectionProcessor, weights = None, "missing: pip install '.[gestures]'"  # type: ignore[assignment]
    else:
        weights = "mediapipe 0.10.21 (full)" if task.is_file() else f"missing: {FETCH_COMMAND} hands"

    def build() -> Benchmarked | None:
        if GestureDetectionProcessor is None or not task.is_file():
            return None
        return GestureDetectionProcessor(
            processor_id="bench-gestures", capabilities=["benchmark"], orchestrator_url="",
            redis_url="redis://unused", settings=settings,
        )  # fmt: skip

    hand = jpeg_frames(np.asarray(Image.open(HAND_PHOTO).convert("RGB")), count)
    one_instant = [{**frame, b"timestamp": b"2026-01-01T00:00:00+00:00"} for frame in hand]
    nobody = jpeg_frames(picture()[0], count)
    return [
        ("hand_landmarker (hand, video mode)", build, weights, hand),
        ("hand_landmarker (hand, image mode)", build, weights, one_instant),
        ("hand_landmarker (no hand, video mode)", build, weights, nobody),
    ]


def measure(processor: Benchmarked, frames: list[dict[bytes, bytes]], batch: int, runs: int) -> float:
    """The median frames/s of ``runs`` passes over ``frames`` in batches of ``batch``."""
    processor.process_batch(frames[:batch])  # the first call at a new batch size sets up its buffers
    rates = []
    for _ in range(runs):
        began = time.perf_counter()
        for start in range(0, len(frames), batch):
            outcomes = processor.process_batch(frames[start : start + batch])
            assert not any(isinstance(outcome, BaseException) for outcome in outcomes), outcomes
        rates.append(len(frames) / (time.perf_counter() - began))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure; the median is printed")
    parser.add_argument("--frames", type=int, default=16, help="frames per run (a multiple of 8)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--only", default="", help="measure only the rows whose name contains this")
    arguments = parser.parse_args(argv)
    env = dict(os.environ, FRAMEFLOW_DEVICE=arguments.device)
    if arguments.threads:
        env["FRAMEFLOW_TORCH_THREADS"] = str(arguments.threads)
    settings = ModelSettings.from_env(env)
    image, description = picture()
    frames = jpeg_frames(image, arguments.frames)
    specs: list[Row] = [(name, build, weights, frames) for name, build, weights in processors(settings)]
    specs += gesture_rows(settings, arguments.frames)
    specs = [spec for spec in specs if arguments.only in spec[0]]

    rows = []
    for name, build, weights, frames in specs:
        processor = build()
        if processor is None:
            rows.append((name, weights, ["-"] * len(BATCH_SIZES)))
            continue
        processor.load()
        rates = [f"{measure(processor, frames, batch, arguments.runs):.1f}" for batch in BATCH_SIZES]
        rows.append((name, weights, rates))
        print(f"  {name}: {', '.join(rates)} frames/s", file=sys.stderr, flush=True)

    print(
        f"frames/s on {arguments.device} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}); {description} (gestures: "
        f"{HAND_PHOTO.name}, {image.shape[1]} x {image.shape[0]} for no hand); "
        f"median of {arguments.runs} runs of {arguments.frames} frames\n"
    )
    print("| model | weights | " + " | ".join(f"batch {batch}" for batch in BATCH_SIZES) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in BATCH_SIZES) + " |")
    for name, weights, rates in rows:
        print(f"| {name} | {weights} | " + " | ".join(rates) + " |")


if __name__ == "__main__":
    main()
