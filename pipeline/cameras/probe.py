"""``frameflow cameras check``: open each camera once and measure what it delivers.

Each camera is read for a short while (all of them at once, one thread each): whether it answers,
its codec and resolution, and the frame rate it actually delivers, which is often not the one its
settings page claims.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

from pipeline.errors import SourceError

from .config import CameraConfig
from .connect import connector
from .status import CameraStatus


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    camera_id: str
    url: str  #: masked
    reachable: bool
    codec: str = ""
    width: int = 0
    height: int = 0
    fps: float | None = None
    error: str = ""


def probe(camera: CameraConfig, seconds: float = 2.0) -> ProbeResult:
    """Read ``camera`` for up to ``seconds`` after its first frame; never raises for the camera's faults."""
    status = CameraStatus(camera.id, camera.masked_url)
    frames = connector(camera, status)()
    arrivals: list[float] = []
    first = None
    try:
        for frame in frames:
            arrivals.append(time.monotonic())
            first = first or frame
            if arrivals[-1] - arrivals[0] >= seconds:
                break
    except SourceError as error:
        if first is None:
            return ProbeResult(camera.id, camera.masked_url, False, error=str(error))
    finally:
        frames.close()  # type: ignore[attr-defined]
    if first is None:
        return ProbeResult(camera.id, camera.masked_url, False, error="the stream ended before its first frame")
    # The first frames of a stream come in a burst (the server's buffer): the rate is measured after it.
    steady = arrivals[len(arrivals) // 4 :]
    span = steady[-1] - steady[0] if len(steady) > 1 else 0.0
    fps = (len(steady) - 1) / span if span > 0 else None
    return ProbeResult(camera.id, camera.masked_url, True, first.codec, first.width, first.height, fps)


def probe_all(cameras: list[CameraConfig], seconds: float = 2.0) -> list[ProbeResult]:
    """Every camera probed at once; results in the cameras' order."""
    if not cameras:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(cameras)), thread_name_prefix="probe") as pool:
        return list(pool.map(lambda camera: probe(camera, seconds), cameras))
