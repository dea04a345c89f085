"""Heartbeats: an APScheduler job that keeps a processor alive in the registry.

Every ``interval_s`` the job writes the processor's liveness and stats. The
registry entry lives :data:`MISSED_BEATS` intervals, so a processor that
misses that many beats is dead everywhere. If the entry expired anyway (Redis
restarted, a long pause), the job registers the processor again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

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

    def _safe_beat(self) -> None:
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

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
