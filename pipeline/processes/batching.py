"""Micro-batching: frames from several worker threads, one ``process_batch`` call.

Dramatiq runs one message per worker thread, and a processor has ``capacity``
of them. When a processor implements ``process_batch``, each thread hands its
frame to the processor's :class:`FrameBatcher` and waits for that frame's own
outcome. The batcher's thread gathers frames until it holds ``max_batch`` of
them or the oldest has waited ``max_wait_ms``, calls ``process_batch`` once,
and gives each thread back its result or its exception. Acks, retries, dead
letters, stats and results stay per frame, in the thread that owns the message,
and ``capacity`` (the threads) still bounds the frames in flight.

One batch runs at a time: a model sees batches one after the other, and frames
that arrive meanwhile make the next batch bigger instead of waiting for nothing.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from pipeline.errors import BatchFailed

T = TypeVar("T")
R = TypeVar("R")

#: What a batch function returns for each item: its result, or the exception that failed it alone.
Outcome = Any


def overrides(instance: object, base: type, name: str) -> bool:
    """Whether ``instance``'s class defines ``name`` differently from ``base``."""
    return getattr(type(instance), name, None) is not getattr(base, name, None)


@dataclasses.dataclass
class _Waiting(Generic[T]):
    item: T
    since: float
    future: Future = dataclasses.field(default_factory=Future)


class FrameBatcher(Generic[T, R]):
    """Turns concurrent :meth:`submit` calls into calls of ``run_batch`` on lists of items.

    Parameters:
      run_batch: called with up to ``max_batch`` items; returns one outcome per item, in order:
        a result, or an exception object that fails that item alone. If it raises, or returns
        another number of outcomes, every item of that batch fails with :class:`BatchFailed`.
      limits: returns ``(max_batch, max_wait_s)``; read at each batch, so a processor's settings
        may change until its first frame.
      name: the batcher thread's name.

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
        self._name = name
        self._waiting: collections.deque[_Waiting[T]] = collections.deque()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self.batches = 0
        self.items = 0

    @property
    def pending(self) -> int:
        """Items waiting for a batch to take them."""
        with self._changed:
            return len(self._waiting)

    def submit(self, item: T) -> R:
        """Queue ``item`` for the next batch and wait for its outcome: return its result or raise its error."""
        waiting = _Waiting(item, time.monotonic())
        with self._changed:
            self._waiting.append(waiting)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()
            self._changed.notify_all()
        return waiting.future.result()

    def close(self, timeout: float | None = None) -> None:
        """Run what is waiting without further delay and stop the thread; a later :meth:`submit` starts it again."""
        with self._changed:
            thread = self._thread
            self._closing = True
            self._changed.notify_all()
        if thread is not None:
            thread.join(timeout)
        with self._changed:
            self._closing = False

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[_Waiting[T]] | None:
        """Wait for a first item, then for more until the batch is full or the first item's wait is over."""
        with self._changed:
            while not self._waiting:
                if self._closing:
                    self._thread = None
                    return None
                self._changed.wait()
            max_batch, max_wait_s = self._limits()
            max_batch = max(1, max_batch)
            deadline = self._waiting[0].since + max_wait_s
            while len(self._waiting) < max_batch and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return [self._waiting.popleft() for _ in range(min(max_batch, len(self._waiting)))]

    def _run(self, batch: list[_Waiting[T]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            outcomes = list(self._run_batch([waiting.item for waiting in batch]))
            if len(outcomes) != len(batch):
                raise BatchFailed(f"process_batch returned {len(outcomes)} outcomes for {len(batch)} frames")
        except BaseException as error:  # every waiting thread must hear about it, whatever it is
            for waiting in batch:
                waiting.future.set_exception(_batch_failed(error, len(batch)))
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                waiting.future.set_exception(outcome)
            else:
                waiting.future.set_result(outcome)


def _batch_failed(error: BaseException, size: int) -> BatchFailed:
    """A fresh error for each frame, so no two worker threads raise (and extend) the same one."""
    if isinstance(error, BatchFailed):
        return BatchFailed(str(error))
    failure = BatchFailed(f"process_batch failed on a batch of {size} frames: {type(error).__name__}: {error}")
    failure.__cause__ = error
    return failure
