"""What a processor's actor does before ``process_frame`` sees a frame: check it, fetch its image.

A processor queue is written by routers, but anything with access to Redis can
write to it too, so nothing is trusted: the message must carry one dict of
fields that :func:`~pipeline.domain.frames.check_frame_fields` accepts, and a
claim-checked image is read only from the frame's own image key. The frame's
image is handed over raw in a :class:`~pipeline.domain.frame_data.FrameData`
(base64 only if ``process_frame`` reads ``b"image_data"``); an entry written
before images travelled raw (base64 inline or stored) reads as it was written. Anything else
is an :class:`~pipeline.errors.UnprocessableFrame` naming what is wrong, which
the actor's ``throws`` turns into a dead letter at once: no retry can help it.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

from dramatiq.middleware import SkipMessage

from pipeline.domain.frame_data import FrameData
from pipeline.domain.frames import (
    IMAGE_DATA_FIELD,
    IMAGE_FIELD,
    IMAGE_REF_FIELD,
    check_frame_fields,
    check_image_size,
    check_raw_image_size,
)
from pipeline.domain.keys import base64_image_key, image_key
from pipeline.errors import UnprocessableFrame
from pipeline.streams.broker import RedisStreamsBroker


def checked_frame(args: tuple, kwargs: dict, max_frame_bytes: int) -> dict[str, str | bytes]:
    """The frame's fields, checked before anything reads them.

    Raises:
      UnprocessableFrame: no frame, other arguments, a field missing or wrong, an image over
        ``max_frame_bytes``.
    """
    if kwargs:
        raise UnprocessableFrame(f"a frame message takes no keyword arguments (got {', '.join(sorted(kwargs))})")
    frame = args[0] if len(args) == 1 else None
    # map over a builtin, not a generator: this runs for every frame a processor takes
    if not isinstance(frame, dict) or not all(map(isinstance, frame, repeat(str))):
        raise UnprocessableFrame("not a frame: a frame message carries one dict of fields")
    check_frame_fields(frame, max_frame_bytes)
    return dict(frame)


def frame_data_of(
    broker: RedisStreamsBroker, queue_name: str, frame: dict[str, str | bytes], max_frame_bytes: int
) -> FrameData:
    """The seed's ``frame_data`` of a checked frame, its claim-checked image fetched; ``frame``
    keeps its text fields only (it loses ``image``, ``image_data`` and ``image_ref``).

    Raises:
      UnprocessableFrame: ``image_ref`` names any key but the frame's own image key.
      SkipMessage: the stored image expired before processing (counted as ``image_expired``).
    """
    image = frame.pop(IMAGE_FIELD, None)
    encoded = frame.pop(IMAGE_DATA_FIELD, None)
    ref = frame.pop(IMAGE_REF_FIELD, None)
    fields = {name.encode(): value.encode() for name, value in frame.items() if isinstance(value, str)}
    if image is not None or encoded is not None:
        return FrameData(fields, image=_as_bytes(image), encoded=None if encoded is None else _as_bytes(encoded))
    frame_id = str(frame["frame_id"])
    raw = ref == image_key(broker.namespace, frame_id)
    if not raw and ref != base64_image_key(broker.namespace, frame_id):
        # Only the router's claim check: never any other key a hand-written entry names.
        raise UnprocessableFrame(f"frame {frame_id}: image_ref {str(ref)[:80]!r} is not its image key")
    stored: Any = broker.direct.execute("GET", ref)
    if stored is None:
        broker.client.hincrby(broker.keys_for(queue_name).drops, "image_expired", 1)
        raise SkipMessage(f"image of frame {frame_id} expired before processing")
    stored = _as_bytes(stored)
    if raw:
        check_raw_image_size(frame_id, stored, max_frame_bytes)
        return FrameData(fields, image=stored)
    check_image_size(frame_id, stored, max_frame_bytes)
    return FrameData(fields, encoded=stored)  # stored base64 before images travelled raw


def _as_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()
