"""Every Redis key of the frame domain is named here, and only here (the broker core's: :mod:`pipeline.streams.keys`).

Keys that belong with a queue carry the queue's stream in braces, as the core's do
(``frameflow:counts:{frames:ready:face-1}``), so they live in the queue's Redis Cluster
slot; a claim-checked image and its reference count share the frame id's slot.
"""

from __future__ import annotations

from pipeline.streams.keys import stream_key

#: The prefix of every processor's queue; the queue of ``face-1`` is ``frames.ready.face-1``
#: (its stream ``frames:ready:face-1``, the seed's name).
PROCESSOR_QUEUE_PREFIX = "frames.ready."


def processor_queue(processor_id: str) -> str:
    """The Dramatiq queue a processor consumes: ``frames.ready.<processor_id>``."""
    return f"{PROCESSOR_QUEUE_PREFIX}{processor_id}"


def processor_key(namespace: str, processor_id: str) -> str:
    """The registry entry of one processor (a hash whose TTL is its liveness)."""
    return f"{namespace}:processor:{processor_id}"


def process_key(namespace: str, processor_id: str, process: str) -> str:
    """The registry entry of one process (``<host>:<pid>``) of a processor that runs as several
    (a hash like a processor entry, with the same TTL; :mod:`pipeline.domain.process_entries`)."""
    return f"{processor_key(namespace, processor_id)}:process:{process}"


def processes_index_key(namespace: str, processor_id: str) -> str:
    """The set of a processor's processes (``<host>:<pid>``) whose entries may still live."""
    return f"{processor_key(namespace, processor_id)}:processes"


def processors_index_key(namespace: str) -> str:
    """The set of every processor id ever registered (to list the dead and reap them)."""
    return f"{namespace}:processors"


def offered_capabilities_key(namespace: str) -> str:
    """The set of every capability a processor ever registered with (``frameflow enqueue`` warns
    about a capability outside it: a typo parks every frame)."""
    return f"{namespace}:capabilities"


def registry_channel(namespace: str) -> str:
    """The pub/sub channel on which registry changes are announced."""
    return f"{namespace}:registry"


def registry_version_key(namespace: str) -> str:
    """A random token rewritten by every registration, update and deregistration, so a reader
    can tell that what it read of the registry is still what is there (:mod:`pipeline.domain.registry_view`)."""
    return f"{namespace}:registry:version"


def health_stream(namespace: str) -> str:
    """The scheduler's heartbeat stream: one entry per pass."""
    return f"{namespace}:health"


def reaping_lock_key(namespace: str, processor_id: str) -> str:
    """Held by the one scheduler re-routing a dead processor's queue."""
    return f"{namespace}:reaping:{processor_id}"


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
    """Where a claim-checked frame image is stored once for all its processors, as raw bytes."""
    return f"{namespace}:image-raw:{{{frame_id}}}"


def base64_image_key(namespace: str, frame_id: str) -> str:
    """Where a claim-checked image was stored as base64 before images travelled raw; entries
    written then still name it, and their processors still read it."""
    return f"{namespace}:image:{{{frame_id}}}"


def image_refs_key(namespace: str, frame_id: str) -> str:
    """How many copies of a frame still need its claim-checked image (same slot as the image)."""
    return f"{namespace}:image-refs:{{{frame_id}}}"


def snapshot_key(namespace: str, frame_id: str) -> str:
    """A processor's short-lived copy of a frame's image, for snapshots (:mod:`pipeline.domain.kept_images`)."""
    return f"{namespace}:snapshot:{{{frame_id}}}"


def preview_key(namespace: str, camera_id: str) -> str:
    """A camera's preview: its newest frame's image, kept a few seconds (:mod:`pipeline.domain.previews`)."""
    return f"{namespace}:camera:{camera_id}:preview"


def previews_index_key(namespace: str) -> str:
    """Sorted set of the cameras with a preview, scored by when it was written (ms): the dashboard's list."""
    return f"{namespace}:previews"


def frame_id_of_image_key(namespace: str, key: str) -> str | None:
    """The frame id of ``key`` when it is a claim-checked image key of ``namespace`` (raw or
    base64), else None."""
    for prefix in (f"{namespace}:image-raw:{{", f"{namespace}:image:{{"):
        if key.startswith(prefix) and key.endswith("}") and len(key) > len(prefix) + 1:
            frame_id = key[len(prefix) : -1]
            return frame_id if "{" not in frame_id and "}" not in frame_id else None
    return None


def probe_key(namespace: str, processor_id: str) -> str:
    """Held by the one router allowed to send a half-open breaker its probe frame."""
    return f"{namespace}:probe:{processor_id}"


def ingest_counts_key(namespace: str, stream: str) -> str:
    """Hash of what ``frameflow ingest`` did with the entries of the original system's ``stream``:
    ``routed``, ``parked``, ``dead_lettered`` and one field per dead-letter reason."""
    return f"{namespace}:counts:ingest:{{{stream}}}"
