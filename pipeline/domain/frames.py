"""Frames: the seed's frame record, validated, and how it sits in a stream entry.

On a processor queue a frame is a readable entry whose fields are the seed's
(``frame_id``, ``camera_id``, ``timestamp`` ISO-8601, ``width``, ``height``,
``format``, ``metadata`` JSON, ``trace_context`` JSON) next to the Dramatiq
envelope in ``message``, and its image as raw bytes in the field ``image``: no
base64 on the wire (a third fewer bytes, no encode on publish, no decode per
processor). When the image is stored once for several processors (claim check),
``image_ref`` names the key that holds it instead; the worker fetches it before
``process_frame``. The seed's ``image_data`` (base64) exists only at the
processor's door (:mod:`pipeline.domain.frame_data`), and in entries written
before this layout, which still read as they were written.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from pipeline.errors import FrameflowError, UnprocessableFrame
from pipeline.streams.wire import FLAT_FIELDS_OPTION

#: The option that marks a Dramatiq message as a frame: its first argument holds the fields, which
#: travel as the stream entry's own fields (the broker core's flat-fields option).
FRAME_OPTION = FLAT_FIELDS_OPTION

#: The seed's frame fields, in the seed's order.
SEED_FIELDS = (
    "frame_id",
    "camera_id",
    "timestamp",
    "image_data",
    "width",
    "height",
    "format",
    "metadata",
    "trace_context",
)

#: Field holding the image's raw bytes, inline.
IMAGE_FIELD = "image"

#: The seed's base64 image field: what ``process_frame`` reads, and what older entries carry inline.
IMAGE_DATA_FIELD = "image_data"

#: Field naming the claim-checked image when it is not inline.
IMAGE_REF_FIELD = "image_ref"

#: A frame's fields as they travel: text, and the raw image in :data:`IMAGE_FIELD`.
FrameFields = dict[str, str | bytes]

#: Image formats a producer may declare.
FORMATS = frozenset({"jpeg", "png", "webp", "bmp", "raw"})

#: Largest image a producer accepts by default (bytes); ``FRAMEFLOW_MAX_FRAME_BYTES`` changes it.
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024

#: The variable that changes :data:`DEFAULT_MAX_FRAME_BYTES`, for producers and processors alike.
MAX_FRAME_BYTES_ENV = "FRAMEFLOW_MAX_FRAME_BYTES"

#: Longest ``frame_id`` a processor accepts (the producer's are 32 hex digits).
MAX_FRAME_ID_CHARS = 256

#: Fields a frame entry must carry (``image``, ``image_data`` or ``image_ref`` besides).
REQUIRED_FIELDS = ("frame_id", "camera_id", "timestamp", "width", "height", "format")

# fullmatch, not match with "$": "$" also matches before a trailing newline ("cam-1\n").
_CAMERA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class FrameRejected(FrameflowError, ValueError):
    """A frame failed validation before it was published; the message says which field and why."""


@dataclasses.dataclass(frozen=True)
class Frame:
    """One camera frame, as a producer publishes it."""

    camera_id: str
    image: bytes
    width: int
    height: int
    format: str = "jpeg"
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    timestamp: datetime = dataclasses.field(default_factory=lambda: datetime.now(UTC))
    #: 128 random bits as 32 hex digits: ``uuid4().hex``'s shape, at a third of its cost per frame.
    frame_id: str = dataclasses.field(default_factory=lambda: os.urandom(16).hex())
    trace_context: dict[str, str] = dataclasses.field(default_factory=dict)

    def validate(self, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Frame:
        if not isinstance(self.camera_id, str) or not _CAMERA_ID.fullmatch(self.camera_id):
            raise FrameRejected(f"bad camera_id {self.camera_id!r}: use 1-128 letters, digits, '.', '_', ':' or '-'")
        if not isinstance(self.image, bytes | bytearray | memoryview):
            raise FrameRejected(f"image must be bytes, not {type(self.image).__name__}")
        size = memoryview(self.image).nbytes  # bytes, whatever the item size of a memoryview
        if size == 0:
            raise FrameRejected("empty image: a frame needs image bytes")
        if size > max_bytes:
            raise FrameRejected(f"image of {size} bytes exceeds the limit of {max_bytes} bytes")
        if not isinstance(self.format, str) or self.format not in FORMATS:
            raise FrameRejected(f"unknown format {self.format!r}: expected one of {', '.join(sorted(FORMATS))}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 65535:
                raise FrameRejected(f"bad {name} {value!r}: expected an integer from 1 to 65535")
        if not isinstance(self.metadata, dict):
            raise FrameRejected(f"metadata must be a dict, not {type(self.metadata).__name__}")
        try:
            if self.metadata:
                json.dumps(self.metadata, allow_nan=False)  # NaN is not JSON: strict readers would choke on it
        except (TypeError, ValueError, RecursionError) as error:
            raise FrameRejected(f"metadata is not JSON-serialisable: {error}") from None
        if not isinstance(self.timestamp, datetime) or self.timestamp.tzinfo is None:
            raise FrameRejected("timestamp must be timezone-aware (e.g. datetime.now(timezone.utc))")
        return self

    @property
    def captured_at_ms(self) -> int:
        return int(self.timestamp.timestamp() * 1000)

    def fields(self) -> FrameFields:
        """The entry fields: the seed's, the image raw in :data:`IMAGE_FIELD` (the router may
        claim-check it: :mod:`middleware.routing`)."""
        return {
            "frame_id": self.frame_id,
            "camera_id": self.camera_id,
            "timestamp": self.timestamp.isoformat(),
            "width": str(self.width),
            "height": str(self.height),
            "format": self.format,
            "metadata": _compact_json(self.metadata),
            "trace_context": _compact_json(self.trace_context),
            IMAGE_FIELD: bytes(self.image),
        }


def take_raw_image(frame: dict[str, Any]) -> bytes | None:
    """Take the frame's inline image out of ``frame``, raw: ``image`` as published, or the seed's
    base64 ``image_data`` (a frame dict sent with ``actor.send``, an entry written before images
    travelled raw) decoded once here. Base64 that does not decode stays as it came, for the
    processor to dead-letter with the reason, and so does an ``image`` that is not bytes."""
    image = frame.get(IMAGE_FIELD)
    if isinstance(image, bytes):
        del frame[IMAGE_FIELD]
        return image
    if image is not None:
        return None
    encoded = frame.get(IMAGE_DATA_FIELD)
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return None
        del frame[IMAGE_DATA_FIELD]
        return decoded
    return None


def frame_size_limit(max_bytes: int | None = None, env: Mapping[str, str] | None = None) -> int:
    """The largest image a frame may carry: ``max_bytes`` when given, else ``FRAMEFLOW_MAX_FRAME_BYTES``,
    else :data:`DEFAULT_MAX_FRAME_BYTES`. A limit that is not a positive integer is a ValueError naming
    where it came from (``0`` used to mean "the default" by accident)."""
    if max_bytes is not None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1:
            raise ValueError(f"max_frame_bytes must be a positive integer, not {max_bytes!r}")
        return max_bytes
    raw = (os.environ if env is None else env).get(MAX_FRAME_BYTES_ENV) or ""
    if not raw:
        return DEFAULT_MAX_FRAME_BYTES
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"{MAX_FRAME_BYTES_ENV}={raw!r}: expected a positive number of bytes")
    return int(raw)


def check_frame_fields(frame: Mapping[str, str | bytes], max_bytes: int) -> None:
    """Check a frame read from a queue the way :meth:`Frame.validate` checks one before it is sent.

    A processor runs this before ``process_frame``: an entry written straight into a queue (by a
    bug or by someone hostile) then fails with what is wrong with it, as an
    :class:`UnprocessableFrame` (dead-lettered at once, not held against the processor), instead of
    somewhere inside ``process_frame`` or, worse, as a result with an empty camera id.
    """
    image = frame.get(IMAGE_FIELD)
    if image is not None and not isinstance(image, bytes):
        raise UnprocessableFrame(f"frame {str(frame.get('frame_id'))[:40]!r}: the image field holds text, not bytes")
    for name, value in frame.items():  # one pass, no copy: every frame a processor takes comes through here
        if not isinstance(value, str) and name != IMAGE_FIELD:
            raise UnprocessableFrame("not a frame: every field but the image must be text")
    _check_text_fields(cast(Mapping[str, str], frame), image, max_bytes)


def _check_text_fields(frame: Mapping[str, str], image: bytes | None, max_bytes: int) -> None:
    """The text fields' checks (``frame`` may hold the image too: no check reads :data:`IMAGE_FIELD`)."""
    frame_id = frame.get("frame_id") or ""
    if not frame_id or len(frame_id) > MAX_FRAME_ID_CHARS:
        raise UnprocessableFrame(f"frame {frame_id[:40]!r}: frame_id must be 1-{MAX_FRAME_ID_CHARS} characters")
    missing = [name for name in REQUIRED_FIELDS if name not in frame]
    if image is None and IMAGE_DATA_FIELD not in frame and IMAGE_REF_FIELD not in frame:
        missing.append(f"{IMAGE_FIELD} (or {IMAGE_DATA_FIELD} or {IMAGE_REF_FIELD})")
    if missing:
        raise UnprocessableFrame(f"frame {frame_id}: missing field(s) {', '.join(missing)}")
    if not _CAMERA_ID.fullmatch(frame["camera_id"]):
        raise UnprocessableFrame(f"frame {frame_id}: bad camera_id {frame['camera_id'][:40]!r}")
    try:
        datetime.fromisoformat(frame["timestamp"])
    except ValueError:
        raise UnprocessableFrame(f"frame {frame_id}: timestamp {frame['timestamp'][:40]!r} is not ISO-8601") from None
    for name in ("width", "height"):
        value = frame[name]
        if not (value.isascii() and value.isdigit() and 0 < int(value) <= 65535):
            raise UnprocessableFrame(f"frame {frame_id}: {name} {value[:20]!r} is not an integer from 1 to 65535")
    if frame["format"] not in FORMATS:
        raise UnprocessableFrame(f"frame {frame_id}: unknown format {frame['format'][:20]!r}")
    for name in ("metadata", "trace_context"):
        if name in frame and not _is_json_object(frame[name]):
            raise UnprocessableFrame(f"frame {frame_id}: {name} is not a JSON object")
    if image is not None:
        check_raw_image_size(frame_id, image, max_bytes)
    if IMAGE_DATA_FIELD in frame:
        check_image_size(frame_id, frame[IMAGE_DATA_FIELD], max_bytes)


def check_raw_image_size(frame_id: str, image: bytes, max_bytes: int) -> None:
    """Refuse a raw image of more than ``max_bytes``."""
    if len(image) > max_bytes:
        raise UnprocessableFrame(
            f"frame {frame_id}: image of {len(image)} bytes exceeds the limit of {max_bytes} bytes"
        )


def check_image_size(frame_id: str, encoded: str | bytes, max_bytes: int) -> None:
    """Refuse a base64 image that decodes to more than ``max_bytes``, before anything decodes it."""
    size = len(encoded) * 3 // 4 - (encoded[-2:].count("=" if isinstance(encoded, str) else b"="))
    if size > max_bytes:
        raise UnprocessableFrame(f"frame {frame_id}: image of {size} bytes exceeds the limit of {max_bytes} bytes")


def _is_json_object(text: str) -> bool:
    if text == "{}":  # what producers write when there is nothing to say: no parse
        return True
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def frame_of(message: Any) -> FrameFields | None:
    """A frame message's fields (its first argument, a dict), or ``None`` for any other message.

    A message is a frame once routed (option ``frame``) or while it asks for capabilities.
    """
    options, args = message.options, message.args
    if (options.get(FRAME_OPTION) or options.get("capabilities")) and args and isinstance(args[0], dict):
        return args[0]
    return None


def _compact_json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":")) if value else "{}"


def now_ms() -> int:
    return int(time.time() * 1000)


def is_stale(options: dict[str, Any], at_ms: int | None = None) -> bool:
    """Whether a frame message (by its ``captured_at_ms``/``max_age_ms`` options) is past its max age."""
    captured, max_age = options.get("captured_at_ms"), options.get("max_age_ms")
    if not captured or not max_age:
        return False
    return (now_ms() if at_ms is None else at_ms) - int(captured) > int(max_age)
