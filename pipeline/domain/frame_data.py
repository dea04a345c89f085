"""The seed's ``frame_data`` at the processor's door, its base64 image made only when read.

Images travel raw (:mod:`pipeline.domain.frames`). The seed's contract is that
``process_frame`` receives ``Dict[bytes, bytes]`` whose ``b"image_data"`` is base64,
and seed-style code base64-decodes it: that contract holds, but :class:`FrameData`
computes the base64 the first time that key is read (and keeps it), so a processor that
never reads it (``process_batch`` and torch workers, :func:`~pipeline.domain.images.decode_frame_image`)
pays neither the encode nor its decode: they take the raw bytes with :func:`frame_image`.
Entries written before images travelled raw carry base64: there the raw bytes are decoded
once, on first ask, and ``b"image_data"`` is the stored text as it was.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping, MutableMapping

from pipeline.errors import ImageDecodeError

#: The seed's key of the base64 image.
IMAGE_DATA_KEY = b"image_data"


class FrameData(MutableMapping[bytes, bytes]):
    """A frame's fields as the seed hands them over (bytes keys and values), ``b"image_data"``
    base64-encoded only when read. Give it the image raw (``image``) or as base64 (``encoded``).

    Writable like the seed's dict; writing ``b"image_data"`` replaces the image.
    """

    __slots__ = ("_encoded", "_fields", "_image")

    def __init__(self, fields: dict[bytes, bytes], *, image: bytes | None = None, encoded: bytes | None = None) -> None:
        self._fields = fields
        self._image = image
        self._encoded = encoded

    @property
    def image(self) -> bytes:
        """The image's raw bytes, without any base64 (decoded once for an entry that carried base64).

        Raises:
          ImageDecodeError: an old-format image that is not valid base64; or no image at all.
        """
        if self._image is None:
            self._image = _decoded(self._encoded, self._frame_id())
        return self._image

    def __getitem__(self, key: bytes) -> bytes:
        if key == IMAGE_DATA_KEY:
            if self._encoded is None:
                if self._image is None:
                    raise KeyError(key)
                self._encoded = base64.b64encode(self._image)
            return self._encoded
        return self._fields[key]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if key == IMAGE_DATA_KEY:
            self._image, self._encoded = None, value
        else:
            self._fields[key] = value

    def __delitem__(self, key: bytes) -> None:
        if key == IMAGE_DATA_KEY:
            if not self._has_image():
                raise KeyError(key)
            self._image = self._encoded = None
        else:
            del self._fields[key]

    def __contains__(self, key: object) -> bool:
        return self._has_image() if key == IMAGE_DATA_KEY else key in self._fields

    def __iter__(self) -> Iterator[bytes]:
        yield from self._fields
        if self._has_image():
            yield IMAGE_DATA_KEY

    def __len__(self) -> int:
        return len(self._fields) + self._has_image()

    def copy(self) -> FrameData:
        """A shallow copy, as ``dict.copy`` gives one (seed code may copy its ``frame_data``); still lazy."""
        return FrameData(dict(self._fields), image=self._image, encoded=self._encoded)

    def __repr__(self) -> str:
        size = len(self._image) if self._image is not None else len(self._encoded or b"") * 3 // 4
        return f"FrameData({self._fields!r}, image=<{size} bytes>)"

    def _has_image(self) -> bool:
        return self._image is not None or self._encoded is not None

    def _frame_id(self) -> str:
        return self._fields.get(b"frame_id", b"?").decode("utf-8", "replace")


def frame_image(frame_data: Mapping[bytes, bytes]) -> bytes:
    """A frame's image as raw bytes: without any base64 work from a :class:`FrameData`, decoded
    from ``b"image_data"`` for any other mapping (a seed-style dict built by hand).

    Raises:
      ImageDecodeError: no image, or ``image_data`` is not valid base64.
    """
    if isinstance(frame_data, FrameData):
        return frame_data.image
    return _decoded(frame_data.get(IMAGE_DATA_KEY), frame_data.get(b"frame_id", b"?").decode("utf-8", "replace"))


def _decoded(encoded: bytes | None, frame_id: str) -> bytes:
    """``encoded`` (a frame's base64 ``image_data``) as raw bytes.

    Raises:
      ImageDecodeError: no image, or not valid base64.
    """
    if not encoded:
        raise ImageDecodeError(f"frame {frame_id} has no image_data")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ImageDecodeError(f"frame {frame_id}: image_data is not valid base64 ({error})") from None
