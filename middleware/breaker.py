"""A circuit breaker per processor: a processor that keeps failing gets no frames
until a single probe frame succeeds.

The processor counts its own outcomes (it knows them first) and publishes the
state in the registry, where every router reads it: ``closed`` (normal),
``open`` (too many failures within ``window_s``: routers skip it) and, after
``cooldown`` in the router, one probe frame; its success closes the breaker,
its failure opens it again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from pipeline.domain.registry import BREAKER_CLOSED, BREAKER_OPEN


class CircuitBreaker:
    """Failure accounting for one processor.

    Parameters:
      on_change: called with ``(state, since)`` whenever the state changes.
      failure_threshold: failures within ``window_s`` that open the breaker.
      window_s: the sliding window.
    """

    def __init__(
        self,
        on_change: Callable[[str, float], None],
        *,
        failure_threshold: int = 5,
        window_s: float = 30.0,
    ) -> None:
        self.on_change = on_change
        self.failure_threshold = failure_threshold
        self.window_s = window_s
        self.state = BREAKER_CLOSED
        self._failures: deque[float] = deque()
        self._lock = threading.Lock()

    def record_success(self) -> None:
        if self.state == BREAKER_CLOSED:  # every frame of a healthy processor: no lock to see nothing changes
            return
        with self._lock:
            if self.state == BREAKER_CLOSED:
                return
            self.state = BREAKER_CLOSED
            self._failures.clear()
        self.on_change(BREAKER_CLOSED, time.time())

    def record_failure(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.window_s:
                self._failures.popleft()
            opened = self.state == BREAKER_OPEN or len(self._failures) >= self.failure_threshold
            changed = opened  # a failed probe re-opens (and restarts the cool-down)
            self.state = BREAKER_OPEN if opened else self.state
        if changed:
            self.on_change(BREAKER_OPEN, time.time())
