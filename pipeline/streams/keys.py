"""Every Redis key of the broker core is named here, and only here (the frame domain's: :mod:`pipeline.domain.keys`).

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

from pipeline.errors import InvalidQueueName

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
    """The keys of one queue; they all share the stream's hash slot.

    ``consumers`` is a sorted set: each consumer of the queue's group, scored with the last time
    (epoch ms, the worker's clock) it said it lives (``StreamConsumer``, every second), so that removing the
    consumers of dead workers (``remove_idle_consumers.lua``) never relies on how a Redis version
    counts a blocked reader's idle time."""

    stream: str
    delayed: str
    dead: str
    drops: str
    consumers: str


def queue_keys(namespace: str, queue_name: str) -> QueueKeys:
    stream = stream_key(queue_name)
    tag = "{" + stream + "}"
    return QueueKeys(
        stream=stream,
        delayed=f"{namespace}:delayed:{tag}",
        dead=f"{namespace}:dead:{tag}",
        drops=f"{namespace}:drops:{tag}",
        consumers=f"{namespace}:consumers:{tag}",
    )


def tagged_stream(key: str) -> str:
    """The stream a companion key of :func:`queue_keys` belongs to: the text between its braces."""
    start = key.index("{") + 1
    return key[start : key.index("}", start)]


def namespace_pattern(namespace: str, kind: str) -> str:
    """A ``SCAN`` pattern for every key of one ``kind`` of the broker's own keys (``dead``, ``delayed``)."""
    return f"{namespace}:{kind}:*"
