"""Frame images: decoded once with Pillow; whatever is wrong with one is a clear ImageDecodeError."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from pipeline.domain.images import decode_frame_image
from pipeline.errors import ImageDecodeError, UnprocessableFrame

from .model_support import corrupt_jpeg, encoded, frame_data

PICTURE = (np.arange(24 * 32 * 3, dtype=np.uint32).reshape(24, 32, 3) % 251).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP"])
def test_lossless_formats_decode_to_the_same_pixels(fmt: str) -> None:
    image = encoded(PICTURE, fmt)
    picture = decode_frame_image(frame_data(image, width=32, height=24, fmt=fmt.lower()))
    assert picture.mode == "RGB" and picture.size == (32, 24)
    assert np.array_equal(np.asarray(picture), PICTURE)


def test_a_jpeg_decodes_to_rgb_of_its_own_size() -> None:
    picture = decode_frame_image(frame_data(encoded(PICTURE, "JPEG"), width=999, height=999, fmt="jpeg"))
    assert picture.mode == "RGB" and picture.size == (32, 24)


def test_raw_frames_are_rgb_or_grey_pixels_of_the_declared_size() -> None:
    rgb = decode_frame_image(frame_data(PICTURE.tobytes(), width=32, height=24, fmt="raw"))
    assert np.array_equal(np.asarray(rgb), PICTURE)
    grey = decode_frame_image(frame_data(PICTURE[:, :, 0].tobytes(), width=32, height=24, fmt="raw"))
    assert np.array_equal(np.asarray(grey)[:, :, 2], PICTURE[:, :, 0])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            frame_data(corrupt_jpeg(PICTURE), width=32, height=24, fmt="jpeg", frame_id="cut"),
            "frame cut: cannot decode",
        ),
        (frame_data(b"hello", width=32, height=24, frame_id="text"), "frame text: 5 bytes declared as png are not a"),
        (frame_data(b"\x00" * 10, width=32, height=24, fmt="raw", frame_id="short"), "frame short: raw image of 10"),
        ({b"frame_id": b"none"}, "frame none has no image_data"),
        ({b"frame_id": b"b64", b"image_data": b"***"}, "frame b64: image_data is not valid base64"),
    ],
    ids=["truncated-jpeg", "not-an-image", "raw-size", "no-image", "bad-base64"],
)
def test_a_broken_image_is_an_unprocessable_frame_with_the_reason(frame: dict[bytes, bytes], message: str) -> None:
    with pytest.raises(ImageDecodeError) as caught:
        decode_frame_image(frame)
    assert str(caught.value).startswith(message), str(caught.value)
    assert isinstance(caught.value, UnprocessableFrame)


def test_base64_is_checked_strictly() -> None:
    image = base64.b64encode(encoded(PICTURE)) + b"!"
    with pytest.raises(ImageDecodeError, match="not valid base64"):
        decode_frame_image({b"frame_id": b"x", b"image_data": image, b"format": b"png"})
