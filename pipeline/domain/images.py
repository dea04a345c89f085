"""Frame images decoded once, with Pillow, into RGB pictures a model can take.

A processor calls :func:`decode_frame_image` on the ``frame_data`` it was given (its raw
bytes taken with :func:`~pipeline.domain.frame_data.frame_image`: no base64 on the way);
whatever is wrong with the image (bad base64, truncated or corrupt JPEG/PNG, a
``raw`` frame whose size does not match ``width`` x ``height``, a decompression
bomb) becomes an :class:`~pipeline.errors.ImageDecodeError` naming the frame and
the cause, so that frame alone is dead-lettered and the worker goes on.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping

from PIL import Image, UnidentifiedImageError

from pipeline.errors import ImageDecodeError

from .frame_data import frame_image

#: The encoded formats Pillow may open (``raw`` frames are read as pixels, see :func:`decode_image`).
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


def decode_frame_image(frame_data: Mapping[bytes, bytes]) -> Image.Image:
    """The frame's picture as an RGB :class:`PIL.Image.Image` (decoded, not lazily opened)."""
    frame_id = frame_data.get(b"frame_id", b"?").decode("utf-8", "replace")
    data = frame_image(frame_data)
    declared = frame_data.get(b"format", b"jpeg").decode("utf-8", "replace")
    width, height = _int_field(frame_data, b"width"), _int_field(frame_data, b"height")
    return decode_image(data, declared, width=width, height=height, frame_id=frame_id)


def decode_image(
    data: bytes,
    declared_format: str = "jpeg",
    *,
    width: int | None = None,
    height: int | None = None,
    frame_id: str = "?",
) -> Image.Image:
    """Decode ``data`` into an RGB picture.

    ``raw`` frames are ``width`` x ``height`` pixels, RGB (3 bytes each) or grey (1 byte);
    every other format is recognised by its content among :data:`PILLOW_FORMATS`, so a PNG
    declared as ``jpeg`` still decodes. The picture's own size wins over the declared one.
    """
    if declared_format == "raw":
        return _decode_raw(data, width, height, frame_id)
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning is an error here: a frame that large is not a camera frame.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as opened:
                opened.load()
                picture = opened.convert("RGB")
    except UnidentifiedImageError:
        raise ImageDecodeError(
            f"frame {frame_id}: {len(data)} bytes declared as {declared_format} are not a "
            f"{'/'.join(name.lower() for name in PILLOW_FORMATS)} image"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(
            f"frame {frame_id}: cannot decode {declared_format} image of {len(data)} bytes: {error}"
        ) from None
    return picture


def _decode_raw(data: bytes, width: int | None, height: int | None, frame_id: str) -> Image.Image:
    if not width or not height:
        raise ImageDecodeError(f"frame {frame_id}: a raw image needs width and height")
    pixels = width * height
    if len(data) == pixels * 3:
        return Image.frombytes("RGB", (width, height), data)
    if len(data) == pixels:
        return Image.frombytes("L", (width, height), data).convert("RGB")
    raise ImageDecodeError(
        f"frame {frame_id}: raw image of {len(data)} bytes does not match {width}x{height} "
        f"(expected {pixels * 3} bytes of RGB or {pixels} of grey)"
    )


def _int_field(frame_data: Mapping[bytes, bytes], name: bytes) -> int | None:
    try:
        return int(frame_data[name])
    except (KeyError, ValueError):
        return None
