"""Micro-batching: frames from several worker threads, one ``process_batch`` call.

Dramatiq runs one message per worker thread, and a processor has ``capacity``
of them. When a processor implements ``process_batch``, each thread hands its
frame to the processor's :class:`FrameBatcher` and waits for that frame's own
outcome. The first thread to find no batch gathering leads the next one: it
waits until the batch holds ``max_batch`` frames or its oldest has waited
``max_wait_ms``, calls ``process_batch`` once, on its own thread, and gives each
waiting thread its result or its exception. A frame thus reaches ``process_batch``
in one hand-over (a separate batcher thread cost two thread switches per frame,
there and back), and the leader's own frame in none. Acks, retries, dead letters,
stats and results stay per frame, in the thread that owns the message, and
``capacity`` (the threads) still bounds the frames in flight.

One batch runs at a time: a model sees batches one after the other, and frames
that arrive meanwhile make the next batch bigger instead of waiting for nothing.
While a batch runs, the next leader gathers; a thread whose frame is still
waiting when a batch ends leads the next one if nobody does.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from pipeline.errors import BatchFailed

T = TypeVar("T")
R = TypeVar("R")

#: What a batch function returns for each item: its result, or the exception that failed it alone.
Outcome = Any


def overrides(instance: object, base: type, name: str) -> bool:
    """Whether ``instance``'s class defines ``name`` differently from ``base``."""
    return getattr(type(instance), name, None) is not getattr(base, name, None)


class _Waiting(Generic[T]):
    """One submitted item and, once its batch ran, its outcome."""

    __slots__ = ("done", "item", "outcome", "since", "taken")

    def __init__(self, item: T, since: float) -> None:
        self.item = item
        self.since = since
        self.taken = False  # in a batch
        self.done = False  # its batch ran: ``outcome`` is set
        self.outcome: Outcome = None


class FrameBatcher(Generic[T, R]):
    """Turns concurrent :meth:`submit` calls into calls of ``run_batch`` on lists of items,
    made by one of the submitting threads.

    Parameters:
      run_batch: called with up to ``max_batch`` items; returns one outcome per item, in order:
        a result, or an exception object that fails that item alone. If it raises, or returns
        another number of outcomes, every item of that batch fails with :class:`BatchFailed`.
      limits: returns ``(max_batch, max_wait_s)``; read at each batch, so a processor's settings
        may change until its first frame.
      name: what the batcher is called (a processor's id), for the reader of a traceback.

    Attributes:
      batches: how many batches ran.
      items: how many items they held (``items / batches`` is the mean batch size).
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R | BaseException]],
        limits: Callable[[], tuple[int, float]],
        *,
        name: str = "frame-batcher",
    ) -> None:
        self._run_batch = run_batch
        self._limits = limits
        self.name = name
        self._waiting: collections.deque[_Waiting[T]] = collections.deque()
        lock = threading.Lock()
        #: Told when the leader may have to act: the batch filled, a batch ended, a close began.
        self._leader_wake = threading.Condition(lock)
        #: Told when a batch ended (outcomes given, or a leader wanted).
        self._batch_done = threading.Condition(lock)
        self._full_at = 1  # max_batch of the batch being gathered: the submit that fills it wakes the leader
        self._leading = False
        self._running = False
        self._closing = False
        self.batches = 0
        self.items = 0

    @property
    def pending(self) -> int:
        """Items waiting for a batch to take them."""
        with self._leader_wake:
            return len(self._waiting)

    def submit(self, item: T) -> R:
        """Queue ``item`` for the next batch and wait for its outcome: return its result or raise its error."""
        waiting = _Waiting(item, time.monotonic())
        with self._leader_wake:
            self._waiting.append(waiting)
            if self._leading and len(self._waiting) >= self._full_at:
                self._leader_wake.notify()
            while not waiting.done:
                if self._leading or waiting.taken:
                    self._batch_done.wait()
                    continue
                self._leading = True
                batch = self._gather()  # releases the lock while it waits; leadership passes on with the batch
                if batch:
                    self._lock_released_run(batch)
        if isinstance(waiting.outcome, BaseException):
            raise waiting.outcome
        return waiting.outcome

    def close(self, timeout: float | None = None) -> None:
        """Run what is waiting without further delay and wait (up to ``timeout``) for it to finish;
        a later :meth:`submit` batches as before."""
        with self._leader_wake:
            self._closing = True
            self._leader_wake.notify_all()
            self._batch_done.wait_for(lambda: not self._waiting and not self._running, timeout)
            self._closing = False

    def _gather(self) -> list[_Waiting[T]]:
        """As the leader (lock held): wait until the previous batch ended and this one is full or its
        first item's wait is over, then take the batch, hand the lead on and mark the batch running."""
        try:
            max_batch, max_wait_s = self._limits()
            max_batch = self._full_at = max(1, max_batch)
            while self._waiting:
                if not self._running and (len(self._waiting) >= max_batch or self._closing):
                    break
                remaining = self._waiting[0].since + max_wait_s - time.monotonic()
                if not self._running and remaining <= 0:
                    break
                self._leader_wake.wait(remaining if remaining > 0 and not self._running else None)
            batch = [self._waiting.popleft() for _ in range(min(max_batch, len(self._waiting)))]
            for waiting in batch:
                waiting.taken = True
            self._running = bool(batch)
            return batch
        finally:
            self._leading = False
            self._batch_done.notify_all()  # a thread still waiting may lead the next batch

    def _lock_released_run(self, batch: list[_Waiting[T]]) -> None:
        """Run ``batch`` without the lock (its leader holds it on entry and on return), give each
        item its outcome and wake every waiting thread."""
        outcomes: list[Outcome] | None = None
        self._leader_wake.release()
        try:
            outcomes = self._outcomes(batch)
        finally:
            self._leader_wake.acquire()
            self._running = False
            if outcomes is None:  # the leader was interrupted (an async exception) outside process_batch
                outcomes = [BatchFailed(f"the batch of {len(batch)} frames was interrupted") for _ in batch]
            for waiting, outcome in zip(batch, outcomes, strict=True):
                waiting.outcome, waiting.done = outcome, True
            self._batch_done.notify_all()  # in every case: no waiting thread may be left without its outcome
            self._leader_wake.notify()

    def _outcomes(self, batch: list[_Waiting[T]]) -> list[Outcome]:
        self.batches += 1
        self.items += len(batch)
        try:
            outcomes = list(self._run_batch([waiting.item for waiting in batch]))
            if len(outcomes) != len(batch):
                raise BatchFailed(f"process_batch returned {len(outcomes)} outcomes for {len(batch)} frames")
        except BaseException as error:  # every waiting thread must hear about it, whatever it is
            return [_batch_failed(error, len(batch)) for _ in batch]
        return outcomes


def _batch_failed(error: BaseException, size: int) -> BatchFailed:
    """A fresh error for each frame, so no two worker threads raise (and extend) the same one."""
    if isinstance(error, BatchFailed):
        return BatchFailed(str(error))
    failure = BatchFailed(f"process_batch failed on a batch of {size} frames: {type(error).__name__}: {error}")
    failure.__cause__ = error
    return failure
