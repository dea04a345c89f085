"""A frame as a camera delivered it, before it is published: decoded video or a received JPEG.

Decoded video stays a decoded picture until the publisher takes it, so only the frames that are
published pay for the JPEG encoding (and the resize); a received JPEG is sent as it is unless the
camera asks for another size.
"""

from __future__ import annotations

import dataclasses
import io
import time
from datetime import UTC, datetime
from typing import Any


@dataclasses.dataclass(frozen=True)
class Captured:
    """One frame from a camera.

    ``video_frame`` is a PyAV ``VideoFrame`` (RTSP, video), ``jpeg`` the bytes an HTTP camera sent;
    exactly one is set. ``captured_at`` is the wall-clock time it was received, ``received`` the
    monotonic one (for its age).
    """

    width: int
    height: int
    codec: str
    video_frame: Any = None
    jpeg: bytes | None = None
    captured_at: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))
    received: float = dataclasses.field(default_factory=time.monotonic)

    def age_s(self) -> float:
        return time.monotonic() - self.received

    def encoded(self, size: tuple[int, int] | None, quality: int) -> tuple[bytes, int, int]:
        """The frame as a JPEG of ``size`` (``None``: its own), with its width and height."""
        width, height = size or (self.width, self.height)
        if self.jpeg is not None and (width, height) == (self.width, self.height):
            return self.jpeg, width, height
        if self.video_frame is not None:
            image = _rgb_image(self.video_frame, width, height)
        else:
            from PIL import Image

            image = Image.open(io.BytesIO(self.jpeg or b"")).convert("RGB").resize((width, height))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return buffer.getvalue(), width, height


def _rgb_image(video_frame: Any, width: int, height: int) -> Any:
    """A decoded picture as a Pillow image of ``width`` x ``height``: swscale converts (and resizes), Pillow
    wraps the converted plane without a copy. PyAV's own ``to_image`` took 7 ms of a 1280x720 frame here,
    this takes under 1 ms (docs/benchmarks.md, "Cameras")."""
    from PIL import Image

    rgb = video_frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR")
    plane = rgb.planes[0]
    return Image.frombuffer("RGB", (width, height), plane, "raw", "RGB", plane.line_size, 1)


def output_size(width: int, height: int, wanted_width: int | None, wanted_height: int | None) -> tuple[int, int]:
    """The size a frame is published at: the camera's ``width``/``height`` when set, the other side
    keeping the picture's proportions when only one is; even numbers, as encoders prefer."""
    if wanted_width and wanted_height:
        return wanted_width, wanted_height
    if wanted_width:
        return wanted_width, max(2, round(height * wanted_width / width / 2) * 2)
    if wanted_height:
        return max(2, round(width * wanted_height / height / 2) * 2), wanted_height
    return width, height
