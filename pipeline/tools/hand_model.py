"""The hand landmarker's weights, built into the model cache by ``frameflow models fetch``.

The gesture processor (``workers/gesture_detection.py``) runs MediaPipe's hand
landmarker, whose current wheels ship no models. The older ``mediapipe==0.10.21``
wheel on PyPI (Apache-2.0) carries the two networks it needs: the palm detector
(``palm_detection_full.tflite``) and the 21-landmark model (``hand_landmark_full.tflite``).
Stored uncompressed in a zip as ``hand_detector.tflite`` and
``hand_landmarks_detector.tflite`` they are a ``hand_landmarker.task`` that
``mediapipe.tasks.vision.HandLandmarker`` loads. (The ``lite`` pair lacks the
normalisation metadata the task needs.)

:func:`fetch_hand_landmarker` downloads that wheel with pip (no dependencies, never
installed; always the same Linux file, so the checksums hold on any host), checks
both files against their SHA-256, and writes the ``.task`` (with the licence) into
``<cache>/hand_landmarker/``. Nothing downloads weights at run time.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from pipeline.tools.models import ModelFetchError, download_wheel, model_dir, sha256, write_atomically

#: The wheel that carries the hand models, pinned: the checksums below are its files'.
MEDIAPIPE = "mediapipe"
MEDIAPIPE_VERSION = "0.10.21"

#: pip options naming one file of that release, whatever host fetches it.
WHEEL_PLATFORM = (
    "--platform",
    "manylinux_2_28_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
)

#: Sub-directory of the cache, and the task file in it.
HAND_DIR = "hand_landmarker"
TASK_FILE = "hand_landmarker.task"

#: Name in the task -> (member of the wheel, its SHA-256 in mediapipe 0.10.21).
TASK_MEMBERS = {
    "hand_detector.tflite": (
        "mediapipe/modules/palm_detection/palm_detection_full.tflite",
        "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
    ),
    "hand_landmarks_detector.tflite": (
        "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
        "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
    ),
}

#: The SHA-256 of the task built from them: a cache already holding it downloads nothing.
TASK_SHA256 = "ef3f184fa8d5e6905ea4770282627d6937975119af763054312d05985c059bda"

#: Every entry of the task gets this date, so the same weights always make the same file.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def hand_landmarker_path(root: Path | None = None) -> Path:
    """Where the ``.task`` lives in the cache ``root`` (default: the model cache)."""
    return (root if root is not None else model_dir()) / HAND_DIR / TASK_FILE


def fetch_hand_landmarker(root: Path | None = None, *, wheel: Path | None = None) -> Path:
    """Build ``<root>/hand_landmarker/hand_landmarker.task`` and return its path.

    Downloads the pinned mediapipe wheel with ``pip download --no-deps``, unless
    ``wheel`` names one already downloaded, or the cache holds the task already. The
    task is written to a temporary name and renamed, so an interrupted fetch never
    leaves half a file.
    """
    target = hand_landmarker_path(root)
    if target.is_file() and sha256(target.read_bytes()) == TASK_SHA256:
        return target
    if wheel is not None:
        _build_task(Path(wheel), target)
        return target
    with tempfile.TemporaryDirectory(prefix="frameflow-fetch-") as scratch:
        requirement = f"{MEDIAPIPE}=={MEDIAPIPE_VERSION}"
        _build_task(download_wheel(requirement, "mediapipe-*.whl", Path(scratch), WHEEL_PLATFORM), target)
    return target


def _build_task(wheel: Path, target: Path) -> None:
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as error:
        raise ModelFetchError(f"{wheel} is not a readable wheel: {error}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    task = io.BytesIO()
    with archive, zipfile.ZipFile(task, "w", zipfile.ZIP_STORED) as bundle:
        names = set(archive.namelist())
        for name, (member, expected) in TASK_MEMBERS.items():
            if member not in names:
                raise ModelFetchError(f"{wheel.name} has no {member}: is it a mediapipe {MEDIAPIPE_VERSION} wheel?")
            data = archive.read(member)
            if sha256(data) != expected:
                raise ModelFetchError(
                    f"{member} in {wheel.name} does not have the expected SHA-256 {expected}: "
                    f"use {MEDIAPIPE} {MEDIAPIPE_VERSION}"
                )
            bundle.writestr(zipfile.ZipInfo(name, _ZIP_DATE), data)
        licences = sorted(name for name in names if name.endswith(".dist-info/LICENSE"))
        licence = archive.read(licences[0]) if licences else None
    write_atomically(target, task.getvalue())
    if licence is not None:
        write_atomically(target.parent / "LICENSE.mediapipe.txt", licence)
