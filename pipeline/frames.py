"""Frames: the seed's frame record, validated, and how it sits in a stream entry.

On a processor queue a frame is a readable entry whose fields are the seed's
(``frame_id``, ``camera_id``, ``timestamp`` ISO-8601, ``image_data`` base64,
``width``, ``height``, ``format``, ``metadata`` JSON, ``trace_context`` JSON)
next to the Dramatiq envelope in ``message``. When the image is stored once
for several processors (claim check), ``image_ref`` names the key that holds
it instead of ``image_data``; the worker resolves it before ``process_frame``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from .errors import FrameflowError

#: The option that marks a Dramatiq message as a frame (its first argument holds the fields).
FRAME_OPTION = "frame"

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

#: Field naming the claim-checked image when ``image_data`` is not inline.
IMAGE_REF_FIELD = "image_ref"

#: Image formats a producer may declare.
FORMATS = frozenset({"jpeg", "png", "webp", "bmp", "raw"})

#: Largest image a producer accepts by default (bytes); ``FRAMEFLOW_MAX_FRAME_BYTES`` changes it.
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024

_CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


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
    frame_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    trace_context: dict[str, str] = dataclasses.field(default_factory=dict)

    def validate(self, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Frame:
        if not isinstance(self.camera_id, str) or not _CAMERA_ID.match(self.camera_id):
            raise FrameRejected(f"bad camera_id {self.camera_id!r}: use 1-128 letters, digits, '.', '_', ':' or '-'")
        if not isinstance(self.image, bytes | bytearray | memoryview) or len(self.image) == 0:
            raise FrameRejected("empty image: a frame needs image bytes")
        if len(self.image) > max_bytes:
            raise FrameRejected(f"image of {len(self.image)} bytes exceeds the limit of {max_bytes} bytes")
        if self.format not in FORMATS:
            raise FrameRejected(f"unknown format {self.format!r}: expected one of {', '.join(sorted(FORMATS))}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 65535:
                raise FrameRejected(f"bad {name} {value!r}: expected an integer from 1 to 65535")
        if not isinstance(self.metadata, dict):
            raise FrameRejected(f"metadata must be a dict, not {type(self.metadata).__name__}")
        try:
            if self.metadata:
                json.dumps(self.metadata)
        except (TypeError, ValueError) as error:
            raise FrameRejected(f"metadata is not JSON-serialisable: {error}") from None
        if self.timestamp.tzinfo is None:
            raise FrameRejected("timestamp must be timezone-aware (e.g. datetime.now(timezone.utc))")
        return self

    @property
    def captured_at_ms(self) -> int:
        return int(self.timestamp.timestamp() * 1000)

    def fields(self, *, image_ref: str | None = None) -> dict[str, str]:
        """The entry fields: the seed's, with ``image_ref`` in place of ``image_data`` when given."""
        fields = {
            "frame_id": self.frame_id,
            "camera_id": self.camera_id,
            "timestamp": self.timestamp.isoformat(),
            "width": str(self.width),
            "height": str(self.height),
            "format": self.format,
            "metadata": _compact_json(self.metadata),
            "trace_context": _compact_json(self.trace_context),
        }
        if image_ref is None:
            fields["image_data"] = base64.b64encode(bytes(self.image)).decode("ascii")
        else:
            fields[IMAGE_REF_FIELD] = image_ref
        return fields


def frame_of(message: Any) -> dict[str, str] | None:
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
