"""What every case shares: a countdown the consumers tick, and waiting for a drained queue."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import redis

#: How often the tail of a run looks whether the queue is drained (only once every message ran).
DRAIN_POLL_S = 0.001


class Countdown:
    """Counts completions from any thread (``itertools.count`` is atomic under the GIL) and
    sets an event at the last one, so the measuring thread waits without polling."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._counter = itertools.count(1)
        self.done = threading.Event()

    def tick(self) -> None:
        if next(self._counter) >= self.total:
            self.done.set()

    def wait(self, timeout_s: float) -> None:
        if not self.done.wait(timeout_s):
            raise TimeoutError(f"not all {self.total} messages completed within {timeout_s:.0f} s")


def wait_drained(drained: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll ``drained`` (a queue's acknowledgements have landed) until it is true."""
    deadline = time.monotonic() + timeout_s
    while not drained():
        if time.monotonic() > deadline:
            raise TimeoutError("the queue did not drain")
        time.sleep(DRAIN_POLL_S)


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


class Phase:
    """Times one phase: wall clock, this process's CPU and (given a client) the Redis server's CPU.

    ``figures(prefix, count)`` gives the rate and the CPU microseconds per message, the
    figure that stays comparable when other work shares the machine.
    """

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.client = client
        self.wall = self.cpu = self.redis_cpu = 0.0

    def _redis_cpu(self) -> float:
        if self.client is None:
            return 0.0
        info = self.client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def __enter__(self) -> Phase:
        self._redis_started = self._redis_cpu()
        self._cpu_started = time.process_time()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall = time.perf_counter() - self._started
        self.cpu = time.process_time() - self._cpu_started
        self.redis_cpu = self._redis_cpu() - self._redis_started

    def figures(self, prefix: str, count: int) -> dict[str, float]:
        figures = {prefix: rate(count, self.wall), f"{prefix}_cpu_us": self.cpu / count * 1e6}
        if self.client is not None:
            figures[f"{prefix}_redis_cpu_us"] = self.redis_cpu / count * 1e6
        return figures
