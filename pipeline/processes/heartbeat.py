"""Heartbeats: an APScheduler job that keeps a processor alive in the registry.

Every ``interval_s`` the job writes the processor's liveness and stats. The
registry entry lives :data:`MISSED_BEATS` intervals, so a processor that
misses that many beats is dead everywhere. If the entry expired anyway (Redis
restarted, a long pause), the job registers the processor again.

That last rule makes leaving the registry a race: a beat that began before the
processor deregistered finds the entry gone and registers it again, and the
processor stays listed (and routed to) after it stopped. So a beat runs under a
lock: :meth:`Heartbeat.stop` waits for a beat in progress and lets none start
after it, and :meth:`Heartbeat.held` keeps beats out while a caller deregisters.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from apscheduler.schedulers.background import BackgroundScheduler

from pipeline.streams.connection import TRANSIENT_ERRORS

logger = logging.getLogger(__name__)

#: Heartbeat intervals a registry entry outlives its last beat by.
MISSED_BEATS = 3


class Heartbeat:
    """Runs ``beat`` every ``interval_s`` seconds on a background scheduler thread."""

    def __init__(self, beat: Callable[[], None], interval_s: float, name: str) -> None:
        self.beat = beat
        self.interval_s = interval_s
        self.name = name
        self.scheduler = BackgroundScheduler(daemon=True)
        # Held by a beat while it runs, by stop() and by held(); reentrant, so a beat may stop its heartbeat.
        self._beating = threading.RLock()
        self._stopped = False

    def _safe_beat(self) -> None:
        with self._beating:
            if self._stopped:
                return
            try:
                self.beat()
            except TRANSIENT_ERRORS as error:
                logger.warning("Heartbeat of %s failed (Redis unreachable, will retry): %s", self.name, error)
            except Exception:
                logger.exception("Heartbeat of %s failed", self.name)

    def start(self) -> None:
        self.scheduler.add_job(
            self._safe_beat,
            "interval",
            seconds=self.interval_s,
            id=f"heartbeat:{self.name}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(self.interval_s)),
        )
        self.scheduler.start()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """No beat runs inside the block: a beat in progress finishes first, the next waits for the end."""
        with self._beating:
            yield

    def stop(self) -> None:
        """Stop beating: returns once a beat in progress is over; no beat runs after that."""
        with self._beating:
            self._stopped = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
