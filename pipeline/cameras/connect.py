"""Which reader a camera's URL needs: ``rtsp://`` PyAV, ``http://`` MJPEG or snapshots, ``synthetic``
the generated test camera (at the camera's fps, so ``make run`` needs no camera)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from .capture import Connect
from .captured import Captured
from .config import CameraConfig
from .http import http_frames
from .rtsp import rtsp_frames
from .sources import SyntheticCamera
from .status import CameraStatus


def connector(camera: CameraConfig, status: CameraStatus) -> Connect:
    """Opens ``camera`` and yields its frames (for its :class:`~pipeline.cameras.capture.CaptureThread`)."""
    if camera.kind == "rtsp":
        return lambda: rtsp_frames(
            camera.url,
            transport=camera.transport,
            open_timeout_s=camera.open_timeout,
            stall_timeout_s=camera.stall_timeout,
            keyframes_only=camera.keyframes_only,
            on_skipped=status.skip,
        )
    if camera.kind == "http":
        return lambda: http_frames(camera.url, fps=camera.fps, stall_timeout_s=camera.stall_timeout)
    return lambda: synthetic_frames(camera.fps, camera.width or 320, camera.height or 240, camera.quality)


def synthetic_frames(fps: float, width: int, height: int, quality: int) -> Iterator[Captured]:
    """The synthetic camera's JPEGs, ``fps`` of them per second."""
    started = time.monotonic()
    for index, frame in enumerate(SyntheticCamera(width, height, quality)):
        yield Captured(frame.width, frame.height, "mjpeg", jpeg=frame.image)
        time.sleep(max(0.0, started + (index + 1) / fps - time.monotonic()))  # the camera's own pace
