"""What a processor answers at ``GET /health``, and serving it.

Orchestrators (compose, Kubernetes) and the original client's probes ask a processor whether it
is fit to take frames: it is when its Redis answers (its queue's backlog could be read) and its
circuit breaker is closed. The body carries its counters under frameflow's names and the original
client's. The endpoint is served only when ``health_port`` is set, and before the processor
registers, because its registry entry names the endpoint with the port actually bound.

:class:`HealthReporting` is mixed into :class:`~pipeline.processes.processor.ProcessorClient`,
as :mod:`.original_api` and :mod:`.presence` are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import REGISTRY

from middleware.breaker import CircuitBreaker
from pipeline.errors import EndpointUnavailable
from pipeline.settings import Settings

from .build_info import register_build_info
from .health import HealthServer
from .processor_stats import ProcessorStats

if TYPE_CHECKING:
    from pipeline.streams.broker import RedisStreamsBroker


class HealthReporting:
    """Mixed into ``ProcessorClient``: its health report and the server that answers it."""

    processor_id: str
    capabilities: list[str]
    capacity: int
    queue_name: str
    health_port: int | None
    stats: ProcessorStats
    broker: RedisStreamsBroker | None
    _breaker: CircuitBreaker
    _health: HealthServer | None

    if TYPE_CHECKING:  # provided by OriginalClientApi

        def original_counters(self) -> dict[str, Any]: ...

    def health_report(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, body)``: healthy while the queue's backlog can be read and the breaker is closed."""
        backlog = None
        if self.broker is not None:
            try:
                backlog = int(self.broker.client.xlen(self.broker.keys_for(self.queue_name).stream))
            except redis.RedisError:
                backlog = None
        healthy = backlog is not None and self._breaker.state == "closed"
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "processor_id": self.processor_id,
            "capabilities": self.capabilities,
            "capacity": self.capacity,
            **self.stats.snapshot(),
            "uptime_s": round(self.stats.uptime_s(), 3),
            **self.original_counters(),  # the original client's names, for its dashboards and probes
            "queue_backlog": backlog,
            "breaker": self._breaker.state,
        }
        return healthy, body

    def _serve_health(self) -> None:
        """Serve ``/health`` and ``/metrics`` on ``health_port`` (0: any free one), before registering:
        the registry entry names the endpoint, with the port actually bound.

        Raises:
          EndpointUnavailable: the port cannot be bound (one line: ``launch.py`` exits with it).
        """
        if self.health_port is None or self._health is not None:
            return
        host = Settings.from_env().health_host
        register_build_info(REGISTRY)
        try:
            self._health = HealthServer(self.health_report, self.health_port, host).start()
        except OSError as error:
            reason = error.strerror or error
            raise EndpointUnavailable(f"cannot serve health on {host}:{self.health_port}: {reason}") from None

    def _stop_health(self) -> None:
        if self._health is not None:
            self._health.stop()
            self._health = None
