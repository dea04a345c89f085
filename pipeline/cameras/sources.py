"""Frame sources for ``frameflow enqueue``: a synthetic camera, a folder of images, a video file.

A source is an iterable of :class:`SourceFrame` (encoded image, size, format,
metadata). Pillow draws and reads images, PyAV (the ``video`` extra) decodes video; both are imported
when a source is opened, so ``import pipeline`` does not pay for them. Opening a
source checks it at once (the path exists, the folder holds images, the file is
a video), so a bad source fails before the first frame is sent.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import SourceError

from .pyav import load_av

#: Image files a folder source reads, by suffix, with the format frames declare.
IMAGE_SUFFIXES = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp", ".bmp": "bmp"}

#: Video files a source reads, by suffix. Any other file is "not an image or video", said before
#: PyAV sees it: FFmpeg opens nearly anything (a text file "plays" as a terminal recording).
VIDEO_SUFFIXES = frozenset(
    (
        ".mp4",
        ".m4v",
        ".mkv",
        ".webm",
        ".avi",
        ".mov",
        ".mpg",
        ".mpeg",
        ".ts",
        ".flv",
        ".h264",
        ".h265",
        ".mjpeg",
        ".gif",
    )
)

#: The source name of the generated camera.
SYNTHETIC = "synthetic"


@dataclasses.dataclass(frozen=True)
class SourceFrame:
    image: bytes
    width: int
    height: int
    format: str
    metadata: dict[str, Any]


def open_source(
    spec: str, *, width: int = 320, height: int = 240, loop: bool = False, quality: int = 85
) -> Iterable[SourceFrame]:
    """``synthetic``, a folder of images, one image file or a video file.

    ``width``/``height`` size the synthetic camera; ``loop`` replays a folder or a
    video from the start when it ends; ``quality`` is the JPEG quality of generated
    and decoded frames.

    Raises:
      SourceError: the path does not exist, the folder has no images, the file is no video.
    """
    if spec == SYNTHETIC:
        return SyntheticCamera(width, height, quality)
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(item for item in path.iterdir() if item.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"no images in {path} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageFiles(files, loop)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFiles([path], loop)
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return VideoFile(path, loop, quality)
        raise SourceError(
            f"cannot read {path}: not an image or video (images: {', '.join(sorted(IMAGE_SUFFIXES))}; "
            f"videos: {', '.join(sorted(VIDEO_SUFFIXES))})"
        )
    raise SourceError(f"no such source {spec!r}: give 'synthetic', a folder of images or a video file")


class SyntheticCamera:
    """Endless JPEG frames of a shape moving across the picture, stamped with the time and a sequence number."""

    def __init__(self, width: int, height: int, quality: int = 85) -> None:
        if not (16 <= width <= 8192 and 16 <= height <= 8192):
            raise SourceError(f"synthetic frames of {width}x{height}: width and height must be from 16 to 8192")
        self.width, self.height, self.quality = width, height, quality

    def __iter__(self) -> Iterator[SourceFrame]:
        from PIL import Image, ImageDraw

        radius = max(4, min(self.width, self.height) // 8)
        for sequence in itertools.count():
            image = Image.new("RGB", (self.width, self.height), (24, 28, 36))
            draw = ImageDraw.Draw(image)
            phase = sequence / 15
            x = radius + (self.width - 2 * radius) * (0.5 + 0.5 * math.sin(phase * 1.3))
            y = radius + (self.height - 2 * radius) * (0.5 + 0.5 * math.cos(phase * 0.9))
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=(235, 165, 45))
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            draw.text((6, 6), f"{stamp}  #{sequence}", fill=(255, 255, 255))
            yield SourceFrame(
                _jpeg(image, self.quality), self.width, self.height, "jpeg", {"source": SYNTHETIC, "sequence": sequence}
            )


class ImageFiles:
    """Image files sent as they are (their own format and size), in name order."""

    def __init__(self, files: list[Path], loop: bool = False) -> None:
        self.files, self.loop = files, loop

    def __iter__(self) -> Iterator[SourceFrame]:
        from PIL import Image, UnidentifiedImageError

        while True:
            for path in self.files:
                try:
                    data = path.read_bytes()
                    with Image.open(io.BytesIO(data)) as image:
                        width, height, kind = image.width, image.height, (image.format or "").lower()
                except UnidentifiedImageError:  # its message names the BytesIO, not the file
                    raise SourceError(f"cannot read image {path}: not an image Pillow can decode") from None
                except OSError as error:
                    raise SourceError(f"cannot read image {path}: {error.strerror or error}") from None
                kind = "jpeg" if kind == "mpo" else kind  # cameras' multi-picture JPEGs are JPEGs
                yield SourceFrame(data, width, height, kind or IMAGE_SUFFIXES[path.suffix.lower()], {"file": path.name})
            if not self.loop:
                return


class VideoFile:
    """The decoded frames of a video file's first video stream, each encoded as a JPEG."""

    def __init__(self, path: Path, loop: bool = False, quality: int = 85) -> None:
        av = load_av(f"the video {path}")
        self.path, self.loop, self.quality = path, loop, quality
        try:
            self.container = av.open(str(path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
            raise SourceError(f"cannot read video {path}: {_reason(error)}") from None
        if not self.container.streams.video:
            self.container.close()
            raise SourceError(f"cannot read video {path}: it has no video stream")

    def __iter__(self) -> Iterator[SourceFrame]:
        av = load_av(f"the video {self.path}")
        decoded = 0
        try:
            while True:
                try:
                    for frame in self.container.decode(video=0):
                        image = frame.to_image()
                        metadata = {"file": self.path.name, "index": decoded, "pts_s": frame.time}
                        decoded += 1
                        yield SourceFrame(_jpeg(image, self.quality), frame.width, frame.height, "jpeg", metadata)
                except av.FFmpegError as error:
                    raise SourceError(f"cannot decode video {self.path}: {_reason(error)}") from None
                if decoded == 0:
                    raise SourceError(f"cannot read video {self.path}: no frame could be decoded")
                if not self.loop:
                    return
                self.container.seek(0)
        finally:
            self.container.close()


def _jpeg(image: Any, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _reason(error: Exception) -> str:
    """FFmpeg's and the OS's own words, without their error numbers."""
    return str(getattr(error, "strerror", None) or error)
