"""Batched acknowledgements: one ``MULTI XACK XDEL EXEC`` for many messages.

Worker threads hand the entry ids they acknowledge to the queue's
:class:`AckBatcher` and go on at once; its thread writes whatever accumulated
while the previous write was in flight, so a busy worker writes large batches
and an idle one writes each ack within one round trip (no timer, no linger).

A delivery may also leave entries to append with its ack (a processor's result,
:meth:`~pipeline.streams.consumer.StreamMessageProxy.write_with_ack`): they are written, for the
whole batch in one round trip, before the batch's acks, and a message is only
acknowledged once its own entries are in Redis.

What it keeps of the broker's guarantees:

* an acknowledged entry stays in the process's held set (so its lease keeps
  being renewed, and it keeps its prefetch slot) until its batch is written;
  only then is it released;
* a write that fails with a connection error is retried, with backoff, until
  it lands: acks are never dropped because Redis was away;
* a process that dies before the write only leaves the entries pending: their
  leases lapse and they are delivered again, which at-least-once allows;
* a message whose own entries Redis refuses (a wrong key type, an ACL, out of
  memory) is not acknowledged: it is released, its lease lapses, and it is
  delivered again (dead-lettered as poison after ``max_deliveries``);
* ``flush`` waits until everything submitted so far is written (a consumer's
  ``close``, so a stopped worker leaves a drained queue behind);
* with a durable broker (:mod:`pipeline.streams.durability`) both writes wait for a
  replica: a message whose entries no replica confirmed in time is not
  acknowledged (delivered again: its result may repeat, never vanish in a
  failover), and acks no replica confirmed are logged in one line (after a
  failover their messages may be delivered again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.errors import NotReplicated

from . import forks
from .connection import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)

#: The most messages one write carries.
MAX_ACK_BATCH = 1000

#: Backoff between failed writes: first and longest wait, in seconds.
RETRY_FIRST_S, RETRY_MAX_S = 0.05, 2.0

Command = Sequence[Any]


class AckBatcher:
    """Writes one queue's acknowledgements in batches, from one daemon thread.

    Parameters:
      acknowledge: acknowledges and deletes a list of entry ids (atomically), or raises.
      release: called with the ids of each finished batch (frees them from the held set).
      execute: runs commands in one round trip and returns their replies, error replies
        as exception values (:meth:`pipeline.streams.direct.DirectRedis.execute_many`); needed
        only for acks that carry writes.
      name: the thread's name.
    """

    def __init__(
        self,
        acknowledge: Callable[[list[bytes]], object],
        release: Callable[[list[bytes]], None],
        execute: Callable[[list[Command]], list[Any]] | None = None,
        name: str = "frameflow-acks",
    ) -> None:
        self._acknowledge = acknowledge
        self._release = release
        self._execute = execute
        self._name = name
        self._pending: list[bytes] = []
        self._writes: dict[bytes, Sequence[Command]] = {}
        self._changed = threading.Condition(threading.Lock())
        self._writer_idle = False
        self._submitted = 0
        self._done = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._generation = forks.generation()

    def submit(self, entry_id: bytes, writes: Sequence[Command] = ()) -> None:
        """Queue ``entry_id`` for acknowledgement, after ``writes``; returns at once."""
        with self._changed:
            self._pending.append(entry_id)
            if writes:
                self._writes[entry_id] = writes
            self._submitted += 1
            if self._writer_idle:
                self._changed.notify_all()
        if self._thread is None or self._closed or self._generation != forks.generation():
            self._start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every ack submitted so far is written (or given up); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            target = self._submitted
            while self._done < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is pending (for up to ``timeout`` seconds), then stop the thread."""
        written = self.flush(timeout)
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread() and self._generation == forks.generation():
            thread.join(timeout=1.0)
        return written

    @property
    def pending(self) -> int:
        """Acks submitted and not written yet."""
        with self._changed:
            return self._submitted - self._done

    def _start(self) -> None:
        with self._changed:
            if self._thread is not None and not self._closed and self._generation == forks.generation():
                return
            # A forked child inherits the ids but not the thread: its own thread writes them.
            self._generation = forks.generation()
            self._closed = False
            self._thread = thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        thread.start()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closed:
                    self._writer_idle = True
                    self._changed.wait()
                self._writer_idle = False
                if not self._pending:
                    return
                batch = self._pending[:MAX_ACK_BATCH]
                del self._pending[:MAX_ACK_BATCH]
                writes = {entry_id: self._writes.pop(entry_id) for entry_id in batch if entry_id in self._writes}
            try:
                refused = self._write_entries(writes) if writes else set()
                acked = [entry_id for entry_id in batch if entry_id not in refused]
                try:
                    self._until_written(self._acknowledge, acked)
                except NotReplicated as error:
                    logger.warning(
                        "%d ack(s) not confirmed by a replica (%s); a failover may deliver them again.",
                        len(acked),
                        error,
                    )
            finally:
                self._release(batch)
                with self._changed:
                    self._done += len(batch)
                    self._changed.notify_all()

    def _write_entries(self, writes: dict[bytes, Sequence[Command]]) -> set[bytes]:
        """Write the batch's entries; the ids of the messages whose entries Redis refused."""
        assert self._execute is not None, "acks that carry writes need an execute function"
        execute = self._execute
        commands = [command for entry_writes in writes.values() for command in entry_writes]
        try:
            replies = self._until_written(lambda: execute(commands))
        except NotReplicated as error:
            logger.warning("Not acknowledging %d message(s): %s; they will be delivered again.", len(writes), error)
            return set(writes)
        if replies is None:
            return set(writes)
        if not any(map(_is_error, replies)):  # the usual batch: every write landed
            return set()
        refused, position = set(), 0
        for entry_id, entry_writes in writes.items():
            errors = [
                reply for reply in replies[position : position + len(entry_writes)] if isinstance(reply, Exception)
            ]
            position += len(entry_writes)
            if errors:
                refused.add(entry_id)
                logger.error(
                    "Not acknowledging %s: Redis refused what it writes (%s); it will be delivered again.",
                    entry_id.decode(),
                    errors[0],
                )
        return refused

    def _until_written(self, write: Callable[..., Any], *args: Any) -> Any:
        """``write(*args)``, retried through connection errors; None when given up."""
        if args and not args[0]:
            return None
        delay = RETRY_FIRST_S
        while True:
            try:
                result = write(*args)
                if delay > RETRY_FIRST_S:
                    logger.warning("Wrote pending acknowledgements after Redis came back.")
                return result
            except TRANSIENT_ERRORS as error:
                if self._closed:
                    logger.warning("Could not write acknowledgements; their messages will be redelivered: %s", error)
                    return None
                if delay == RETRY_FIRST_S:
                    logger.warning("Could not write acknowledgements (will retry): %s", error)
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            except NotReplicated:
                raise  # written on the primary: writing it again would not help (the caller decides)
            except Exception:
                logger.exception("Could not write acknowledgements; their messages will be redelivered")
                return None


def _is_error(reply: Any) -> bool:
    return isinstance(reply, Exception)
