"""Camera affinity: every frame of one camera to the same live instance of a capability.

A processor that keeps state per camera (a tracker that follows hands from frame to
frame, a gesture counted once held for N frames) needs all of a camera's frames, in
order, at one instance. It registers with ``affinity="camera"``; for its capability
the router then places a frame by its ``camera_id`` instead of by load:

* **rendezvous hashing**: each live instance scores ``hash(camera, instance)`` and the
  highest wins. Every producer computes the same answer from the registry alone, with
  no shared table to keep; when an instance leaves (it dies, or is drained) only its
  cameras move, each to its next-best instance, and they come back when it returns.
* **overload**: an instance whose queue is full (its backlog at its queue bound, every
  slot busy) is passed over, so its cameras move rather than lose frames; when every
  instance is that full, the hash decides among all of them.

A camera that moves starts afresh on its new instance: that instance has no state for
it (and a processor resets a camera it has not seen for a while, see
``workers/hand_tracking.py``). Processors without affinity keep least-loaded routing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from pipeline.domain.registry import ProcessorInfo

#: The affinity a processor may declare (``ProcessorClient(..., affinity="camera")``).
CAMERA_AFFINITY = "camera"
AFFINITIES = (CAMERA_AFFINITY,)


def rendezvous_score(camera_id: str, processor_id: str) -> int:
    """The weight of ``processor_id`` for ``camera_id``: the same in every process and on every host."""
    digest = hashlib.blake2b(f"{camera_id}\0{processor_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def overloaded(info: ProcessorInfo, load: Mapping[str, float]) -> bool:
    """Whether ``info``'s queue is full: queued and in-flight frames at its bound plus its capacity."""
    if info.queue_bound <= 0:
        return False
    capacity = max(1, info.capacity)
    return load.get(info.processor_id, 0.0) * capacity >= info.queue_bound + capacity


def camera_instance(camera_id: str, candidates: Sequence[ProcessorInfo], load: Mapping[str, float]) -> ProcessorInfo:
    """The instance among ``candidates`` (live, not draining) that ``camera_id``'s frames go to."""
    return first_open(ranked(camera_id, candidates), load)


def ranked(camera_id: str, candidates: Sequence[ProcessorInfo]) -> list[ProcessorInfo]:
    """``candidates`` from ``camera_id``'s first choice to its last: highest score first.

    The ranking depends on the instances alone, so a router keeps it while they stay the
    same (:class:`middleware.route_index.RouteIndex`) and places a frame in
    :func:`first_open` without hashing every instance again."""
    return sorted(candidates, key=lambda info: rendezvous_score(camera_id, info.processor_id), reverse=True)


def first_open(ranking: Sequence[ProcessorInfo], load: Mapping[str, float]) -> ProcessorInfo:
    """The best-ranked instance whose queue is not full; the best-ranked when every queue is."""
    return next((info for info in ranking if not overloaded(info, load)), ranking[0])


def wants_camera_affinity(candidates: Sequence[ProcessorInfo]) -> bool:
    return any(info.affinity == CAMERA_AFFINITY for info in candidates)
