"""Every Redis key frameflow uses is named here, and only here.

A Dramatiq queue name cannot hold a colon, a Redis key usually does: the queue
``frames.ready.face-1`` lives in the stream ``frames:ready:face-1`` (the seed's
names, so ``redis-cli XRANGE frames:ready:face-1 - +`` shows what is queued).

The broker's own keys for that queue put the stream key between braces, e.g.
``frameflow:delayed:{frames:ready:face-1}``. Redis Cluster hashes a key by the
text inside its first ``{...}``, and a key without braces by its whole name, so
the stream and all of its companion keys land in one slot: every script touches
a single slot and runs unchanged on a cluster.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import InvalidQueueName

#: The consumer group every queue is read through.
CONSUMER_GROUP = "workers"

#: The name of the stream entry field that holds the Dramatiq message envelope.
ENVELOPE_FIELD = "message"

_QUEUE_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9._-]*$")


def validate_queue_name(queue_name: str) -> str:
    """Return ``queue_name`` or raise :class:`InvalidQueueName`."""
    if not isinstance(queue_name, str) or not _QUEUE_NAME.match(queue_name):
        raise InvalidQueueName(f"invalid queue name {queue_name!r}: it must match [a-zA-Z_][a-zA-Z0-9._-]* (no colons)")
    return queue_name


def stream_key(queue_name: str) -> str:
    """The stream that holds ``queue_name``: dots become colons."""
    return validate_queue_name(queue_name).replace(".", ":")


def queue_name_for(stream: str) -> str:
    """The queue whose stream is ``stream`` (the inverse of :func:`stream_key`)."""
    return stream.replace(":", ".")


class QueueKeys(NamedTuple):
    """The keys of one queue; they all share the stream's hash slot."""

    stream: str
    delayed: str
    dead: str
    drops: str


def queue_keys(namespace: str, queue_name: str) -> QueueKeys:
    stream = stream_key(queue_name)
    tag = "{" + stream + "}"
    return QueueKeys(
        stream=stream,
        delayed=f"{namespace}:delayed:{tag}",
        dead=f"{namespace}:dead:{tag}",
        drops=f"{namespace}:drops:{tag}",
    )


def counts_key(namespace: str, queue_name: str) -> str:
    """Hash of what happened to a processor queue's frames that only Redis sees from every
    producer (field ``routed``); the scheduler's ``/metrics`` reports it."""
    return f"{namespace}:counts:{{{stream_key(queue_name)}}}"


def parked_counts_key(namespace: str) -> str:
    """Hash of frames ever parked, one field per capability."""
    return f"{namespace}:counts:parked"


def parked_drops_key(namespace: str) -> str:
    """Hash of parked frames dropped before any capable processor came, by reason: ``stale``
    (past their max age), ``overflow`` (the oldest, beyond the parked bound)."""
    return f"{namespace}:drops:parked"


def parked_key(namespace: str, capability: str) -> str:
    """The stream where frames wait for a processor with ``capability``."""
    return f"{namespace}:parked:{{{capability}}}"


def image_key(namespace: str, frame_id: str) -> str:
    """Where a claim-checked frame image is stored once for all its processors."""
    return f"{namespace}:image:{{{frame_id}}}"


def image_refs_key(namespace: str, frame_id: str) -> str:
    """How many copies of a frame still need its claim-checked image (same slot as the image)."""
    return f"{namespace}:image-refs:{{{frame_id}}}"


def snapshot_key(namespace: str, frame_id: str) -> str:
    """A processor's short-lived copy of a frame's image, for snapshots (``pipeline/kept_images.py``)."""
    return f"{namespace}:snapshot:{{{frame_id}}}"


def frame_id_of_image_key(namespace: str, key: str) -> str | None:
    """The frame id of ``key`` when it is a claim-checked image key of ``namespace``, else None."""
    prefix = f"{namespace}:image:{{"
    if key.startswith(prefix) and key.endswith("}") and len(key) > len(prefix) + 1:
        frame_id = key[len(prefix) : -1]
        return frame_id if "{" not in frame_id and "}" not in frame_id else None
    return None


def probe_key(namespace: str, processor_id: str) -> str:
    """Held by the one router allowed to send a half-open breaker its probe frame."""
    return f"{namespace}:probe:{processor_id}"
