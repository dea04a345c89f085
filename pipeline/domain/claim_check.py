"""Claim-checked images: stored once per frame, counted, deleted when the last copy is done.

A frame that fans out (or is parked for some capability) with an image above the
router's ``claim_check_above`` carries ``image_ref`` instead of its image; the router
stores the raw image once under ``<ns>:image-raw:{frame_id}`` (entries written before
images travelled raw name ``<ns>:image:{frame_id}``, base64) and the number of copies it wrote under
``<ns>:image-refs:{frame_id}`` (the same slot). Each copy releases its reference
when it is done for good: processed (with its ack), skipped (stale, image expired),
dead-lettered, dropped by its queue's bound or from a parked stream. The last
release deletes the image (``release_image.lua``). A retried copy keeps its
reference; a re-routed one hands it to the copies it becomes.

Under overload images then live as long as the copies that need them, not as long
as their TTL, so Redis holds about ``queued copies x image size``. The TTL (the
frame's max age and a grace) stays as the safety net for a reference never
released (a process killed between removing a copy and releasing it). At least
once has one cost here: a copy processed twice (its worker died between writing
its result and its ack) releases twice, so a sibling copy of the same frame may
find the image gone; that frame is then counted as ``image_expired``, not lost.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis

from pipeline.domain.keys import frame_id_of_image_key, image_key, image_refs_key

from .frames import IMAGE_REF_FIELD

if TYPE_CHECKING:
    from pipeline.streams.broker import RedisStreamsBroker

logger = logging.getLogger(__name__)

Command = tuple[Any, ...]


def store_commands(namespace: str, frame_id: str, image: bytes, copies: int, ttl_ms: int) -> list[Command]:
    """Store the raw ``image`` once for ``copies`` copies of ``frame_id``, both keys living ``ttl_ms``."""
    return [
        ("SET", image_key(namespace, frame_id), image, "PX", ttl_ms),
        ("SET", image_refs_key(namespace, frame_id), copies, "PX", ttl_ms),
    ]


def release_commands(broker: RedisStreamsBroker, refs: Iterable[bytes | str], *, each: int = 1) -> list[Command]:
    """The commands that release ``each`` reference per item of ``refs`` (negative: take them).

    Only the namespace's own image keys count: an ``image_ref`` written by hand that names
    any other key is ignored, so an entry can never make a release touch a foreign key.
    """
    script = broker.scripts["release_image"]
    counts: Counter[str] = Counter()
    for ref in refs:
        text = ref.decode("utf-8", "replace") if isinstance(ref, bytes) else str(ref)
        if frame_id_of_image_key(broker.namespace, text) is not None:
            counts[text] += each
    commands: list[Command] = []
    for key, count in counts.items():
        frame_id = frame_id_of_image_key(broker.namespace, key)
        assert frame_id is not None
        commands.append(("EVALSHA", script.sha, 2, image_refs_key(broker.namespace, frame_id), key, count))
    return commands


def run_commands(broker: RedisStreamsBroker, commands: list[Command]) -> None:
    """Run release (and counting) commands in one round trip. A failure is logged, not raised:
    the frames they concern are already gone or counted, and the images' TTL still applies."""
    if not commands:
        return
    try:
        replies = broker.direct.execute_many(commands, scripts=broker.scripts_by_sha)
    except redis.RedisError as error:
        logger.warning("Could not release %d claim-checked image reference(s): %s", len(commands), error)
        return
    failed = [reply for reply in replies if isinstance(reply, Exception)]
    if failed:
        logger.warning("Could not release %d claim-checked image reference(s): %s", len(failed), failed[0])


def release_images(broker: RedisStreamsBroker, refs: Iterable[bytes | str]) -> None:
    """Release one reference per item of ``refs`` (frames removed for good), at once."""
    run_commands(broker, release_commands(broker, [ref for ref in refs if ref]))


def image_ref_of(message: Any) -> str | None:
    """The ``image_ref`` of a frame message's frame (its first argument), if it has one."""
    args = getattr(message, "args", ())
    frame = args[0] if args and isinstance(args[0], dict) else None
    ref = frame.get(IMAGE_REF_FIELD) if frame is not None else None
    return ref if isinstance(ref, str) and ref else None
