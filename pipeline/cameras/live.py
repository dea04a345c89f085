"""``frameflow enqueue --source rtsp://...`` (or ``http://...``): one camera as an endless source.

The camera is read by a capture thread (reconnecting, keep-latest) exactly as ``frameflow cameras
run`` reads it; each step of the iteration takes the newest frame, so a source paced at
``--rate`` never sends old frames. Anything else (``synthetic``, files, folders) is
:func:`~pipeline.cameras.sources.open_source`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

from .capture import CaptureThread
from .captured import Captured
from .config import SCHEMES, CameraConfig
from .connect import connector
from .latest import LatestSlot
from .sources import SourceFrame, open_source
from .status import CameraStatus

#: How long one wait for a frame lasts (Ctrl-C is seen between waits).
WAIT_S = 0.5


def open_frames(
    spec: str,
    *,
    width: int = 320,
    height: int = 240,
    loop: bool = False,
    quality: int = 85,
    fps: float = 5.0,
) -> Iterable[SourceFrame]:
    """A camera URL as a :class:`LiveCamera` (``fps``: how often a snapshot URL is asked), else
    :func:`~pipeline.cameras.sources.open_source` (synthetic, an image, a folder, a video)."""
    if urlsplit(spec).scheme in SCHEMES:
        return LiveCamera(CameraConfig(id="enqueue", url=spec, capabilities=("enqueue",), fps=fps, quality=quality))
    return open_source(spec, width=width, height=height, loop=loop, quality=quality)


class LiveCamera:
    """The newest frame of a camera each time one is asked for, as a JPEG at the camera's size."""

    def __init__(self, camera: CameraConfig) -> None:
        self.camera = camera
        self.status = CameraStatus(camera.id, camera.masked_url)

    def __iter__(self) -> Iterator[SourceFrame]:
        slot: LatestSlot[Captured] = LatestSlot(self.status.skip)
        capture = CaptureThread(connector(self.camera, self.status), slot, self.status)
        capture.start()
        try:
            while True:
                captured = slot.take(timeout=WAIT_S)
                if captured is None:
                    continue
                image, width, height = captured.encoded(None, self.camera.quality)
                yield SourceFrame(image, width, height, "jpeg", {"source": self.camera.kind, "codec": captured.codec})
        finally:
            capture.stop()
