"""What a processor's actor does before ``process_frame`` sees a frame: check it, fetch its image.

A processor queue is written by routers, but anything with access to Redis can
write to it too, so nothing is trusted: the message must carry one dict of
text fields that :func:`~pipeline.domain.frames.check_frame_fields` accepts, and a
claim-checked image is read only from the frame's own image key. Anything else
is an :class:`~pipeline.errors.UnprocessableFrame` naming what is wrong, which
the actor's ``throws`` turns into a dead letter at once: no retry can help it.
"""

from __future__ import annotations

from typing import Any

from dramatiq.middleware import SkipMessage

from pipeline.domain.frames import IMAGE_REF_FIELD, check_frame_fields, check_image_size
from pipeline.domain.keys import image_key
from pipeline.errors import UnprocessableFrame
from pipeline.streams.broker import RedisStreamsBroker


def checked_frame(args: tuple, kwargs: dict, max_frame_bytes: int) -> dict[str, str]:
    """The frame's fields, checked before anything reads them.

    Raises:
      UnprocessableFrame: no frame, other arguments, a field missing or wrong, an image over
        ``max_frame_bytes``.
    """
    if kwargs:
        raise UnprocessableFrame(f"a frame message takes no keyword arguments (got {', '.join(sorted(kwargs))})")
    frame = args[0] if len(args) == 1 else None
    if not isinstance(frame, dict) or not all(
        isinstance(name, str) and isinstance(value, str) for name, value in frame.items()
    ):
        raise UnprocessableFrame("not a frame: a frame message carries one dict of text fields")
    check_frame_fields(frame, max_frame_bytes)
    return dict(frame)


def frame_data_of(
    broker: RedisStreamsBroker, queue_name: str, frame: dict[str, str], max_frame_bytes: int
) -> dict[bytes, bytes]:
    """The seed's ``frame_data`` (bytes keys and values) of a checked frame, its claim-checked
    image fetched; ``frame`` loses its ``image_ref``.

    Raises:
      UnprocessableFrame: ``image_ref`` names any key but the frame's own image key.
      SkipMessage: the stored image expired before processing (counted as ``image_expired``).
    """
    ref = frame.pop(IMAGE_REF_FIELD, None)
    frame_data = {name.encode(): value.encode() for name, value in frame.items()}
    if ref is None:
        return frame_data
    if ref != image_key(broker.namespace, frame["frame_id"]):
        # Only the router's claim check: never any other key a hand-written entry names.
        raise UnprocessableFrame(f"frame {frame['frame_id']}: image_ref {ref[:80]!r} is not its image key")
    image: Any = broker.direct.execute("GET", ref)  # the stored base64 bytes, handed over as they are
    if image is None:
        broker.client.hincrby(broker.keys_for(queue_name).drops, "image_expired", 1)
        raise SkipMessage(f"image of frame {frame.get('frame_id')} expired before processing")
    image = image if isinstance(image, bytes) else str(image).encode()
    check_image_size(frame["frame_id"], image, max_frame_bytes)
    frame_data[b"image_data"] = image
    return frame_data
