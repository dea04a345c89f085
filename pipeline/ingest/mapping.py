"""One entry of the original ``frames:metadata`` stream, mapped to ``FrameProducer.publish``'s arguments.

detektr's capture service writes one entry per frame: ``frame_id``, ``camera_id``, ``timestamp``
(ISO-8601), ``size_bytes``, ``width``, ``height``, ``format``, ``trace_context`` (W3C, JSON) and
``metadata`` (JSON, whose ``detection_type`` names what to look for). The image is in an
``image_data`` field (base64) or named by a field holding a Redis key or a file path.

Anything that cannot become a frame is :class:`Unmappable`, with a ``kind`` (counted) and a
reason (kept in the dead letter): nothing here raises anything else for bad input.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: The original's stream and the fields each of its entries carries.
ORIGINAL_STREAM = "frames:metadata"
REQUIRED_FIELDS = ("frame_id", "camera_id", "timestamp", "width", "height", "format")
IMAGE_DATA_FIELD = "image_data"


class Unmappable(Exception):
    """An entry that cannot become a frame: ``kind`` is the counted reason, ``str()`` the whole story."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """How ``frameflow ingest`` reads the original stream and maps its entries.

    Parameters:
      stream: the original's stream of frame entries.
      group: the consumer group (the original frame-buffer's group may read the same stream meanwhile).
      consumer: this process's consumer name (its pending entries are read again after a restart).
      capability_map: ``detection_type`` → capabilities; when empty the detection type is the
        capability itself, and when set a type it does not list is unknown (dead-lettered).
      default_detection_type: used for entries whose metadata names none (default: dead-letter them).
      image_key_field: an entry field naming a Redis key that holds the image bytes.
      image_path_field: an entry field naming a file that holds the image.
      image_root: files named by ``image_path_field`` must lie under it.
      dead_letters: the stream where unmappable entries go, with the reason.
      max_age_ms: how long an ingested frame stays worth processing.
    """

    stream: str = ORIGINAL_STREAM
    group: str = "frameflow-ingest"
    consumer: str = dataclasses.field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    capability_map: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    default_detection_type: str | None = None
    image_key_field: str | None = None
    image_path_field: str | None = None
    image_root: Path | None = None
    dead_letters: str = f"{ORIGINAL_STREAM}:dead"
    max_age_ms: int = 5000


def map_entry(
    raw: Mapping[bytes, bytes], config: IngestConfig, read_key: Callable[[str], bytes | None]
) -> dict[str, Any]:
    """``FrameProducer.publish``'s keyword arguments for one entry; ``read_key`` reads a Redis key.

    Raises:
      Unmappable: the entry cannot become a frame (its kind and reason say why).
    """
    fields = _text_fields(raw)
    missing = [name for name in REQUIRED_FIELDS if not fields.get(name)]
    if missing:
        raise Unmappable("missing_field", f"missing field(s) {', '.join(missing)}")
    metadata = _json_object(fields, "metadata")
    return {
        "frame_id": fields["frame_id"],
        "camera_id": fields["camera_id"],
        "timestamp": _timestamp(fields["timestamp"]),
        "width": _dimension(fields, "width"),
        "height": _dimension(fields, "height"),
        "format": fields["format"].lower(),
        "metadata": metadata,
        "capabilities": _capabilities(metadata, config),
        "image": _image(fields, config, read_key),
        "trace_context": _trace_context(fields),
        "max_age_ms": config.max_age_ms,
    }


def _text_fields(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    fields = {}
    for name, value in raw.items():
        try:
            fields[name.decode()] = value.decode()
        except UnicodeDecodeError:
            raise Unmappable("bad_field", f"field {name.decode('utf-8', 'replace')!r} is not UTF-8 text") from None
    return fields


def _timestamp(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise Unmappable("bad_timestamp", f"bad timestamp {text[:40]!r}: not ISO-8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _dimension(fields: Mapping[str, str], name: str) -> int:
    try:
        return int(fields[name])
    except ValueError:
        raise Unmappable("bad_field", f"bad {name} {fields[name][:20]!r}: not an integer") from None


def _json_object(fields: Mapping[str, str], name: str) -> dict[str, Any]:
    text = fields.get(name)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise Unmappable("bad_field", f"{name} is not a JSON object")
    return value


def _capabilities(metadata: Mapping[str, Any], config: IngestConfig) -> list[str]:
    detection_type = metadata.get("detection_type") or config.default_detection_type
    if not isinstance(detection_type, str) or not detection_type:
        raise Unmappable("no_detection_type", "no detection type: metadata.detection_type is missing")
    if not config.capability_map:
        return [detection_type]
    capabilities = config.capability_map.get(detection_type)
    if not capabilities:
        known = ", ".join(sorted(config.capability_map))
        raise Unmappable("unknown_detection_type", f"unknown detection type {detection_type[:40]!r} (known: {known})")
    return list(capabilities)


def _image(fields: Mapping[str, str], config: IngestConfig, read_key: Callable[[str], bytes | None]) -> bytes:
    if fields.get(IMAGE_DATA_FIELD):
        try:
            return base64.b64decode(fields[IMAGE_DATA_FIELD], validate=True)
        except (binascii.Error, ValueError):
            raise Unmappable("bad_image", "image_data is not base64") from None
    if config.image_key_field and fields.get(config.image_key_field):
        key = fields[config.image_key_field]
        image = read_key(key)
        if not image:
            raise Unmappable("bad_image_reference", f"bad image reference: Redis key {key[:80]!r} holds no image")
        return image
    if config.image_path_field and fields.get(config.image_path_field):
        return _image_file(fields[config.image_path_field], config.image_root)
    named = " or ".join(filter(None, (IMAGE_DATA_FIELD, config.image_key_field, config.image_path_field)))
    raise Unmappable("no_image", f"no image: the entry has no {named} field")


def _image_file(text: str, root: Path | None) -> bytes:
    path = Path(text)
    if root is not None:
        path = (root / path).resolve()
        if not path.is_relative_to(root.resolve()):
            raise Unmappable("bad_image_reference", f"bad image reference: {text[:80]!r} is outside {root}")
    try:
        image = path.read_bytes()
    except OSError as error:
        raise Unmappable("bad_image_reference", f"bad image reference: {text[:80]!r}: {error.strerror}") from None
    if not image:
        raise Unmappable("bad_image_reference", f"bad image reference: {text[:80]!r} is empty")
    return image


def _trace_context(fields: Mapping[str, str]) -> dict[str, str] | None:
    """The entry's W3C context to continue; one that cannot be read starts a new trace instead."""
    try:
        context = _json_object(fields, "trace_context")
    except Unmappable:
        return None
    carrier = {name: value for name, value in context.items() if isinstance(value, str)}
    return carrier if "traceparent" in carrier else None
