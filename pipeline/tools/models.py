"""The model cache, and ``frameflow models fetch``, which fills it.

Processors in ``workers/`` load their weights from the cache (``FRAMEFLOW_MODEL_DIR``,
default ``~/.cache/frameflow/models``); nothing downloads weights at run time.
This module only downloads and extracts files: it imports no torch.

The MTCNN face detector's pretrained weights (P-Net, R-Net, O-Net) are published
inside the ``facenet-pytorch`` wheel on PyPI (``facenet_pytorch/data/*.pt``, MIT
licence). That package pins an old torch, so it is never installed:
:func:`fetch_mtcnn_weights` downloads the pinned wheel with pip (no
dependencies), checks the three files against their known SHA-256 and copies
them, with the licence, into ``<cache>/mtcnn/``. The hand landmarker's weights
come the same way from another wheel (:mod:`pipeline.tools.hand_model`), through
:func:`download_wheel`, :func:`sha256` and :func:`write_atomically`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from pipeline.errors import FrameflowError
from pipeline.settings import Settings

#: The wheel that carries the MTCNN weights, pinned: the checksums below are its files'.
FACENET_PYTORCH = "facenet-pytorch"
FACENET_PYTORCH_VERSION = "2.6.0"

#: Sub-directory of the cache holding the MTCNN weights.
MTCNN_DIR = "mtcnn"

#: The MTCNN weight files, by name, with their SHA-256 in facenet-pytorch 2.6.0.
MTCNN_FILES = {
    "pnet.pt": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet.pt": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet.pt": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}

#: Where those files sit inside the wheel.
_WHEEL_DATA = "facenet_pytorch/data/"

#: The command that fills the cache, for messages.
FETCH_COMMAND = "frameflow models fetch"


class ModelFetchError(FrameflowError):
    """Weights could not be downloaded or extracted; the message says why and what to do instead."""


def model_dir(settings: Settings | None = None) -> Path:
    """The model cache (``FRAMEFLOW_MODEL_DIR``), user directory expanded."""
    return Path((settings or Settings.from_env()).model_dir).expanduser()


def mtcnn_dir(root: Path | None = None) -> Path:
    """Where the MTCNN weights live in the cache ``root`` (default: :func:`model_dir`)."""
    return (root if root is not None else model_dir()) / MTCNN_DIR


def missing_mtcnn_weights(directory: Path) -> list[str]:
    """The MTCNN weight files ``directory`` lacks (empty when it holds all three)."""
    return [name for name in MTCNN_FILES if not (directory / name).is_file()]


def fetch_mtcnn_weights(root: Path | None = None, *, wheel: Path | None = None) -> Path:
    """Put the MTCNN weights into ``<root>/mtcnn`` and return that directory.

    Downloads the pinned facenet-pytorch wheel with ``pip download --no-deps`` into a
    temporary directory, unless ``wheel`` names one already downloaded (for hosts
    without access to a package index). Files already present with the right
    checksum are kept; each file is written to a temporary name and renamed, so an
    interrupted fetch never leaves a half-written weight file.
    """
    target = mtcnn_dir(root)
    if wheel is not None:
        _extract(Path(wheel), target)
        return target
    with tempfile.TemporaryDirectory(prefix="frameflow-fetch-") as scratch:
        requirement = f"{FACENET_PYTORCH}=={FACENET_PYTORCH_VERSION}"
        _extract(download_wheel(requirement, "facenet_pytorch-*.whl", Path(scratch)), target)
    return target


def download_wheel(requirement: str, pattern: str, into: Path, platform: tuple[str, ...] = ()) -> Path:
    """Download the wheel of ``requirement`` (pinned) with pip, without its dependencies, into
    ``into`` and return it (the file matching ``pattern``). ``platform`` adds pip options
    (``--platform``...) for a wheel that is not pure Python, so every host gets the same file."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        requirement,
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        *platform,
        "--dest",
        str(into),
    ]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ModelFetchError(f"could not run pip to download {requirement}: {error}") from None
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise ModelFetchError(
            f"pip could not download {requirement} (exit {completed.returncode}): {' / '.join(detail)}. "
            f"Download the wheel elsewhere (pip download {requirement} --no-deps) and run "
            f"'{FETCH_COMMAND} --wheel <file>'."
        )
    wheels = sorted(into.glob(pattern))
    if not wheels:
        raise ModelFetchError(f"pip reported success but left no {pattern} in {into}")
    return wheels[0]


def _extract(wheel: Path, target: Path) -> None:
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as error:
        raise ModelFetchError(f"{wheel} is not a readable wheel: {error}") from None
    target.mkdir(parents=True, exist_ok=True)
    with archive:
        names = set(archive.namelist())
        for name, expected in MTCNN_FILES.items():
            destination = target / name
            if destination.is_file() and sha256(destination.read_bytes()) == expected:
                continue
            member = _WHEEL_DATA + name
            if member not in names:
                raise ModelFetchError(f"{wheel.name} has no {member}: is it a facenet-pytorch wheel?")
            data = archive.read(member)
            if sha256(data) != expected:
                raise ModelFetchError(
                    f"{member} in {wheel.name} does not have the expected SHA-256 {expected}: "
                    f"use {FACENET_PYTORCH} {FACENET_PYTORCH_VERSION}"
                )
            write_atomically(destination, data)
        licences = sorted(name for name in names if name.endswith(".dist-info/LICENSE.md"))
        if licences:
            write_atomically(target / "LICENSE.facenet-pytorch.md", archive.read(licences[0]))


def sha256(data: bytes) -> str:
    """The SHA-256 of ``data``, in hex."""
    return hashlib.sha256(data).hexdigest()


def write_atomically(destination: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``destination``, then rename it there."""
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
