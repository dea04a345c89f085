"""Kept images: a short-lived copy of a frame's image for whoever shows the result (snapshots).

A frame's image does not outlive its processing: a claim-checked image is deleted when the last
copy of the frame is done, an inline one goes with its queue entry. The MQTT bridge reads
results later (seconds later, or minutes after an outage) and needs the picture to draw a
snapshot. So a processor, when ``FRAMEFLOW_SNAPSHOT_TTL_S`` is above 0, keeps the image of every
frame whose result found something (:func:`wants_snapshot`) under ``<ns>:snapshot:{frame_id}`` for
that many seconds, and names the key in the result's ``snapshot_ref`` field. The copy is written
in the same round trip as the result and the frame's ack, never on its own, and frames without
detections cost nothing. A reader checks that ``snapshot_ref`` is the snapshot key of the entry's
own frame before reading it: a hand-written entry cannot make it read another key.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.domain.frame_data import frame_image
from pipeline.domain.keys import snapshot_key
from pipeline.errors import ImageDecodeError

if TYPE_CHECKING:
    import redis
    from PIL import Image

#: The result field that names the kept image.
SNAPSHOT_REF_FIELD = "snapshot_ref"

#: The kept image's field, raw bytes (copies kept before images travelled raw hold base64 ``image_data``).
KEPT_IMAGE_FIELD = "image"


def wants_snapshot(result: Mapping[str, Any]) -> bool:
    """Whether a result found something: a number above 0 in a field named ``*_detected``
    (``faces_detected``, ``objects_detected``), frameflow's convention for detectors."""
    return any(
        name.endswith("_detected") and isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        for name, value in result.items()
    )


@dataclasses.dataclass(frozen=True)
class KeptImage:
    """A copy of a frame's image to keep for snapshots: the commands that write it (with the frame's
    ack, before its result) and the key the result names in :data:`SNAPSHOT_REF_FIELD`."""

    ref: str
    commands: tuple[tuple[Any, ...], ...]


def kept_image(
    namespace: str,
    frame: Mapping[str, Any],
    frame_data: Mapping[bytes, bytes],
    result: Mapping[str, Any] | None,
    ttl_s: int,
) -> KeptImage | None:
    """With ``ttl_s`` > 0 and a result that found something, the frame's image kept for ``ttl_s``
    seconds (:mod:`pipeline.processes.frame_ack` writes it); else None."""
    if ttl_s <= 0 or result is None or not wants_snapshot(result) or b"image_data" not in frame_data:
        return None
    try:
        image = frame_image(frame_data)  # raw: a FrameData hands it over without base64
    except ImageDecodeError:
        return None  # a snapshot is a nicety: a frame whose image does not decode keeps none
    key = snapshot_key(namespace, frame["frame_id"])
    details = {name: frame.get(name, "") for name in ("format", "width", "height")}
    return KeptImage(
        key,
        (
            ("HSET", key, KEPT_IMAGE_FIELD, image, *(item for pair in details.items() for item in pair)),
            ("EXPIRE", key, ttl_s),
        ),
    )


def read_kept_image(client: redis.Redis, namespace: str, ref: str, frame_id: str) -> Image.Image | None:
    """The picture ``ref`` keeps for ``frame_id``, or ``None`` when it expired, was never kept,
    is not that frame's key, or does not decode (a snapshot is a nicety: it never stops events)."""
    from pipeline.domain.images import decode_image

    if ref != snapshot_key(namespace, frame_id):
        return None
    stored = client.hgetall(ref)
    if not stored or (KEPT_IMAGE_FIELD.encode() not in stored and b"image_data" not in stored):
        return None
    try:
        data = stored.get(KEPT_IMAGE_FIELD.encode()) or base64.b64decode(stored[b"image_data"], validate=True)
        width, height = (int(stored.get(name) or 0) or None for name in (b"width", b"height"))
        declared = stored.get(b"format", b"jpeg").decode("utf-8", "replace")
        return decode_image(data, declared, width=width, height=height, frame_id=frame_id)
    except (binascii.Error, ValueError, ImageDecodeError):
        return None
