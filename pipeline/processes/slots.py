"""A processor's hard bound on frames in flight, resizable while it runs.

``ProcessorClient`` runs at most ``capacity`` frames at once. A fixed
``threading.BoundedSemaphore`` cannot change its bound, and the original client's
``update_configuration({"capacity": n})`` changes it live: :class:`ProcessingSlots`
is a counting bound whose size can be changed at any time. Growing it lets waiting
frames start at once; shrinking it lets the frames already running finish and
starts no new one until fewer than the new bound are in flight.

A processor's consumer holds :data:`PREFETCH_PER_SLOT` frames per slot when its queue drops
nothing for a waiting frame (unbounded, or ``reject_newest``): one running and one waiting in
this process, so that a thread that finishes starts its next frame at once instead of after a
round trip to Redis (Dramatiq's own workers prefetch twice their threads). With ``drop_oldest``
(the default) it holds one per slot: a frame read ahead could no longer be replaced by a fresher
one, so a slow processor would work on a frame one processing time older than the newest.
"""

from __future__ import annotations

import threading
from types import TracebackType

#: Frames a processor's consumer holds per slot (``capacity``): running, and next in line.
PREFETCH_PER_SLOT = 2


def prefetch_for(capacity: int, queue_bound: int, overflow: str) -> int:
    """How many frames a processor's consumer holds: :data:`PREFETCH_PER_SLOT` per slot, or one per slot
    where the queue's bound drops the oldest waiting frame (a frame read ahead is out of its reach)."""
    per_slot = 1 if queue_bound > 0 and overflow == "drop_oldest" else PREFETCH_PER_SLOT
    return per_slot * max(1, capacity)


class ProcessingSlots:
    """At most :attr:`size` holders at once; ``with slots:`` waits for a free slot."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a processor needs at least one slot")
        self._size = size
        self._used = 0
        self._waiting = 0
        # Taking and giving back a free slot holds the lock alone (a C call); the condition is
        # only waited on when no slot is free, and only notified when someone waits on it.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    @property
    def size(self) -> int:
        return self._size

    @property
    def used(self) -> int:
        """Slots held now (frames being processed)."""
        return self._used

    def resize(self, size: int) -> None:
        """Change the bound; holders above a smaller bound keep their slots until they release them."""
        if size < 1:
            raise ValueError("a processor needs at least one slot")
        with self._changed:
            self._size = size
            self._changed.notify_all()

    def acquire(self) -> None:
        with self._lock:
            if self._used >= self._size:
                self._waiting += 1
                try:
                    self._changed.wait_for(lambda: self._used < self._size)
                finally:
                    self._waiting -= 1
            self._used += 1

    def release(self) -> None:
        with self._lock:
            if self._used == 0:
                raise ValueError("released a slot that was not held")
            self._used -= 1
            if self._waiting:
                self._changed.notify()

    def __enter__(self) -> ProcessingSlots:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
