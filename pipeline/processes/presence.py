"""A processor's presence in the registry: what it says of itself, kept true by heartbeats.

Routers send frames only to processors with a live registry entry, so everything that writes
or removes that entry is one concern, kept here apart from consuming frames: the processor's
entry (:class:`~pipeline.domain.registry.ProcessorRegistry`) and, beside it, this process's own
(:class:`~pipeline.domain.process_entries.ProcessEntries`), written on registering and on every
beat; the frames parked while nobody served a capability, released when the processor
(re)appears; and leaving, where the processor's entry goes only with its last live process.

:class:`RegistryPresence` is mixed into :class:`~pipeline.processes.processor.ProcessorClient`,
as :mod:`.original_api` is: its state (``_registry``, ``_heartbeat``, ``_withdrawn``) is the
one the original client's ``register``/``unregister`` share.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from middleware.breaker import CircuitBreaker
from middleware.routing import router_of
from pipeline.domain.process_entries import ProcessEntries, summed_counters
from pipeline.domain.registry import ProcessorInfo, ProcessorRegistry
from pipeline.settings import Settings

from .heartbeat import MISSED_BEATS, Heartbeat
from .processor_stats import ProcessorStats

if TYPE_CHECKING:
    from pipeline.streams.broker import RedisStreamsBroker

    from .health import HealthServer

logger = logging.getLogger(__name__)

#: The fields of a registry entry (what a process's own entry may carry of its stats).
_ENTRY_FIELDS = frozenset(field.name for field in dataclasses.fields(ProcessorInfo))


class RegistryPresence:
    """Mixed into ``ProcessorClient``: registering, heartbeats, leaving, parked frames' release."""

    processor_id: str
    capabilities: list[str]
    capacity: int
    queue_name: str
    actor_name: str
    result_stream: str | None
    health_check_interval: float
    version: str
    queue_bound: int
    overflow: str
    affinity: str | None
    stats: ProcessorStats
    broker: RedisStreamsBroker | None
    _breaker: CircuitBreaker
    _health: HealthServer | None
    _registry: ProcessorRegistry | None
    _heartbeat: Heartbeat | None
    #: True after leaving (``unregister()``, the shutdown): beats neither refresh nor re-create the entry.
    _withdrawn: bool = False

    if TYPE_CHECKING:  # provided by ProcessorClient

        def _ensure_broker(self) -> RedisStreamsBroker: ...

    def info(self) -> ProcessorInfo:
        """The processor's registry entry, as this process sees it."""
        return ProcessorInfo(
            processor_id=self.processor_id,
            capabilities=tuple(self.capabilities),
            capacity=self.capacity,
            queue_name=self.queue_name,
            actor_name=self.actor_name,
            result_stream=self.result_stream,
            health_endpoint=f"http://{Settings.from_env().health_host}:{self._health.port}/health"
            if self._health is not None
            else None,
            version=self.version,
            queue_bound=self.queue_bound,
            overflow=self.overflow,
            breaker=self._breaker.state,
            heartbeat_interval_s=self.health_check_interval,
            affinity=self.affinity or "",
        )

    def process_info(self, stats: dict[str, Any] | None = None) -> ProcessorInfo:
        """This process's own registry entry: :meth:`info` with its own pid and counters (``stats``,
        else a snapshot of them)."""
        stats = self.stats.snapshot() if stats is None else stats
        own = {name: value for name, value in stats.items() if name in _ENTRY_FIELDS}
        return dataclasses.replace(self.info(), **own)

    def _come_online(self) -> None:
        """Register, heartbeat from now on, and take the frames parked meanwhile."""
        broker = self._ensure_broker()
        self._registry = ProcessorRegistry(broker.client, broker.namespace)
        self._withdrawn = False
        self._register()
        self._heartbeat = Heartbeat(self._beat, self.health_check_interval, self.processor_id)
        self._heartbeat.start()
        self._release_parked()

    def _go_absent(self) -> None:
        """Stop heartbeating, then leave the registry (in that order: a beat still running would
        register the processor again)."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._registry is not None:
            self._withdrawn = True
            self._leave_registry()

    def _release_parked(self) -> None:
        """Route the frames parked for this processor's capabilities while it was not registered."""
        broker = self.broker
        router = router_of(broker) if broker is not None else None
        if broker is not None and router is not None:
            routed, dropped = router.release_parked(broker, self.capabilities)
            if routed or dropped:
                logger.info("Released parked frames: %d routed, %d dropped as stale.", routed, dropped)

    def _register(self) -> None:
        assert self._registry is not None
        ttl_s = self._entry_ttl_s()
        self._registry.register(self.info(), ttl_s=ttl_s)
        self._process_entries().beat(self.process_info(), ttl_s=ttl_s)

    def _beat(self) -> None:
        """This process's own entry, then the processor's, with the counters of all its processes."""
        assert self._registry is not None
        if self._withdrawn:
            return  # unregister(): out of the registry until register()
        ttl_s = self._entry_ttl_s()
        # Once per beat: it measures the rate since the last beat, and both entries say the same.
        stats = self.stats.for_heartbeat()
        processes = self._process_entries().beat(self.process_info(stats), ttl_s)
        alive = self._registry.heartbeat(self.processor_id, ttl_s=ttl_s, **{**stats, **summed_counters(processes)})
        if not alive:
            logger.warning("Registry entry of %s had expired; registering again.", self.processor_id)
            self._register()
            self._release_parked()  # frames that found no live processor meanwhile (a Redis failover, a stall)

    def _leave_registry(self) -> None:
        """Remove this process's entry; the processor's entry goes with its last live process
        (another process of it still running keeps it routed to)."""
        assert self._registry is not None
        if not self._process_entries().remove(self.process_info()):
            self._registry.deregister(self.processor_id)

    def _process_entries(self) -> ProcessEntries:
        assert self._registry is not None
        return ProcessEntries(self._registry.client, self._registry.namespace)

    def _entry_ttl_s(self) -> float:
        """How long an entry outlives its last beat: :data:`~.heartbeat.MISSED_BEATS` intervals."""
        return self.health_check_interval * MISSED_BEATS

    def _publish_breaker(self, state: str, since: float) -> None:
        if self._registry is not None:
            self._registry.update(self.processor_id, breaker=state, breaker_since=since)
