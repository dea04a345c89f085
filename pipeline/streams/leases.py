"""Lease renewal: a message delivered to a consumer stays reserved for it
while this process lives, however long the actor runs.

Each entry handed to a consumer is pending in the stream's consumer group; its
idle time is the age of its lease. Consumers of other processes take over any
entry idle longer than ``lease_ms`` (``claim.lua``). One :class:`LeaseKeeper`
thread per process resets the idle time of every entry this process still
holds, every ``lease_ms / 3``, through ``renew.lua``, which never takes an
entry back from a consumer that already claimed it.

Why a thread is enough, and when it is not: a pure-Python actor releases the
GIL every few milliseconds, so the keeper runs on time. A C extension that
holds the GIL for longer than two thirds of the lease would starve it (the
failure Dramatiq #692 describes); size ``FRAMEFLOW_LEASE_MS`` above the
longest such call. A process that dies stops renewing at once, which is the
point: its messages go to a live consumer within ``lease_ms``.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from .connection import TRANSIENT_ERRORS

if TYPE_CHECKING:
    from redis.commands.core import Script

logger = logging.getLogger(__name__)

#: How many ids one renewal script call carries.
RENEW_CHUNK = 500


class HeldEntries:
    """The entries of one queue this process holds: delivered here, not yet acked, nacked or
    handed back. The :class:`LeaseKeeper` renews their leases.

    Shared by the process's successive consumers of the queue: after a connection error
    Dramatiq closes its consumer and consumes anew while the messages already handed to
    worker threads keep running, so their leases must go on being renewed, and their acks
    (through the new consumer) must free its prefetch slots.

    An entry whose ack is submitted but not written yet (:mod:`pipeline.streams.acks`) stays held
    (its lease renewed) until the write, but no longer counts against the prefetch: its
    work is done, so the consumer may fetch in its place while the ack is on its way (up
    to twice its prefetch held in all, however slow the acks are).
    """

    def __init__(self) -> None:
        self.ids: set[bytes] = set()
        self.changed = threading.Condition()
        self._acked = 0
        self._waiters = 0

    def snapshot(self) -> list[bytes]:
        with self.changed:
            return list(self.ids)

    def add(self, entry_ids: Iterable[bytes]) -> None:
        with self.changed:
            self.ids.update(entry_ids)

    def forget(self, entry_ids: Iterable[bytes]) -> None:
        """Entries nacked, handed back or given up: no longer held."""
        with self.changed:
            self.ids.difference_update(entry_ids)
            self.changed.notify_all()

    def acked(self) -> None:
        """One held entry's ack was submitted: its slot may be refilled."""
        with self.changed:
            self._acked += 1
            if self._waiters:
                self.changed.notify_all()

    def release_acked(self, entry_ids: list[bytes]) -> None:
        """The acks of these entries were written (or given up): no longer held."""
        with self.changed:
            self.ids.difference_update(entry_ids)
            self._acked -= len(entry_ids)
            self.changed.notify_all()

    def wait_for_slots(self, prefetch: int, timeout_s: float) -> int:
        """How many more entries a consumer with ``prefetch`` may fetch, waiting up to
        ``timeout_s`` for one slot when there is none."""
        with self.changed:
            if self._free(prefetch) <= 0:
                self._waiters += 1
                try:
                    self.changed.wait(timeout_s)
                finally:
                    self._waiters -= 1
            return self._free(prefetch)

    def _free(self, prefetch: int) -> int:
        return min(prefetch - (len(self.ids) - self._acked), 2 * prefetch - len(self.ids))


class LeaseHolder(Protocol):
    """What the keeper needs from a consumer."""

    stream: str
    consumer_name: str

    def held_ids(self) -> list[bytes]: ...

    def forget(self, entry_ids: Iterable[bytes]) -> None: ...


class LeaseKeeper:
    """Renews the leases of every consumer of one broker, from one daemon thread.

    Parameters:
      script: the registered ``renew.lua``.
      group: the consumer group name.
      lease_ms: the lease length; renewal runs every third of it.
    """

    def __init__(self, script: Script, group: str, lease_ms: int) -> None:
        self.script = script
        self.group = group
        self.interval = max(lease_ms / 3000, 0.05)
        self._holders: weakref.WeakSet[LeaseHolder] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def watch(self, holder: LeaseHolder) -> None:
        with self._lock:
            self._holders.add(holder)
            self._ensure_thread()

    def _ensure_thread(self) -> None:
        # A forked child inherits the object but not the thread.
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="frameflow-lease-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.renew_all()

    def renew_all(self) -> None:
        """Renew every held lease once (the thread's tick, callable from tests)."""
        with self._lock:
            holders = list(self._holders)
        for holder in holders:
            ids = holder.held_ids()
            for start in range(0, len(ids), RENEW_CHUNK):
                chunk = ids[start : start + RENEW_CHUNK]
                try:
                    lost = self.script(keys=[holder.stream], args=[self.group, holder.consumer_name, *chunk])
                except TRANSIENT_ERRORS as error:
                    logger.warning("Could not renew leases on %s (will retry): %s", holder.stream, error)
                    break
                except Exception:
                    logger.exception("Unexpected error renewing leases on %s", holder.stream)
                    break
                if lost:
                    logger.warning(
                        "Lost the lease of %d message(s) on %s to another consumer; they may run twice: %s",
                        len(lost),
                        holder.stream,
                        ", ".join(entry.decode() for entry in lost[:5]),
                    )
