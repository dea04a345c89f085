"""The rest of the original ``ProcessorClient``'s public API, on frameflow's registry and broker.

Code written against detektr's frame-buffer-v2 client calls more than ``start``/``stop``/
``process_frame``: it registers and unregisters on its own, publishes results outside
``process_frame``, reads its metrics and capacity, reconfigures itself at run time and uses
the client as an async context manager. :class:`OriginalClientApi` gives
:class:`~pipeline.processes.processor.ProcessorClient` those methods with the original's
meaning; where the original asked its HTTP orchestrator, these write the Redis registry
(which every router reads) instead. The README's migration table maps each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import dramatiq

from pipeline.domain.registry import ProcessorRegistry
from pipeline.domain.results import MAX_RESULT_BYTES, encoding_problem, result_fields
from pipeline.domain.telemetry import current_trace_context
from pipeline.errors import ConfigurationRefused, FrameflowError, ResultRefused

from .heartbeat import Heartbeat
from .processor_stats import ProcessorStats
from .slots import ProcessingSlots, prefetch_for

if TYPE_CHECKING:
    from pipeline.streams.broker import RedisStreamsBroker

logger = logging.getLogger(__name__)

#: The settings ``update_configuration`` changes live.
CONFIGURABLE = ("capacity", "capabilities")


class OriginalClientApi:
    """Mixed into ``ProcessorClient``: the original client's methods beside the seed's."""

    processor_id: str
    capabilities: list[str]
    capacity: int
    queue_name: str
    result_stream: str | None
    results_maxlen: int
    stats: ProcessorStats
    broker: RedisStreamsBroker | None
    _slots: ProcessingSlots
    _worker: dramatiq.Worker | None
    _owns_worker: bool
    _registry: ProcessorRegistry | None
    _heartbeat: Heartbeat | None
    _withdrawn: bool  # RegistryPresence's: True after unregister(), whose beats then write nothing
    _online: asyncio.Event | None = None
    _running: asyncio.Task[None] | None = None

    if TYPE_CHECKING:  # provided by ProcessorClient, and by RegistryPresence (presence.py) from _register on

        async def start(self) -> None: ...

        def stop(self) -> None: ...

        def ensure_allowed(self) -> None: ...

        def _ensure_broker(self) -> RedisStreamsBroker: ...

        def _register(self) -> None: ...

        def _release_parked(self) -> None: ...

    @property
    def id(self) -> str:
        """The processor's id (the original's ``processor.id``)."""
        return self.processor_id

    # -- registration ----------------------------------------------------------------------
    async def register(self) -> None:
        """Register in the registry now (idempotent; ``start()`` registers by itself too).

        Raises:
          RegistrationRefused: ``FRAMEFLOW_ALLOWED_PROCESSORS`` does not allow this id.
        """
        self.ensure_allowed()
        await asyncio.get_running_loop().run_in_executor(None, self._register_now)

    def _register_now(self) -> None:
        self._withdrawn = False
        self._registry_now()
        self._register()
        self._release_parked()

    async def unregister(self) -> None:
        """Leave the registry now: routers send this processor no new frame (idempotent).

        Frames already on its queue are still processed while it runs; heartbeats no longer
        register it again until :meth:`register` (or a new ``start()``)."""
        await asyncio.get_running_loop().run_in_executor(None, self._unregister_now)

    def _unregister_now(self) -> None:
        # Beats held off meanwhile: one that began before would find the entry gone and register it again.
        with self._heartbeat.held() if self._heartbeat is not None else contextlib.nullcontext():
            self._withdrawn = True
            deregistered = self._registry_now().deregister(self.processor_id)
        if deregistered:
            logger.info("Processor %s unregistered: no new frames are routed to it.", self.processor_id)

    def _registry_now(self) -> ProcessorRegistry:
        if self._registry is None:
            broker = self._ensure_broker()
            self._registry = ProcessorRegistry(broker.client, broker.namespace)
        return self._registry

    # -- results -----------------------------------------------------------------------------
    async def publish_result(self, result: Mapping[str, Any]) -> str:
        """Write ``result`` to ``result_stream`` now, outside ``process_frame``; returns its entry id.

        Encoded as returned results are (scalars as text, nested values as JSON, plus
        ``processor_id``, ``timestamp`` and the current trace context); ``result["frame_id"]``
        names the frame it is about.

        Raises:
          ResultRefused: no ``result_stream``, or ``result`` cannot be encoded (the reason says why).
        """
        if not self.result_stream:
            raise ResultRefused(f"processor {self.processor_id} has no result_stream to publish on")
        problem = encoding_problem(result)
        if problem is not None:
            raise ResultRefused(f"cannot publish the result: {problem}")
        frame = {"frame_id": str(result["frame_id"]), "camera_id": str(result.get("camera_id", ""))}
        fields = result_fields(
            result, frame, processor_id=self.processor_id, latency_ms=0.0, trace_context=current_trace_context()
        )
        size = sum(len(name.encode()) + len(value.encode()) for name, value in fields.items())
        if size > MAX_RESULT_BYTES:
            raise ResultRefused(f"cannot publish the result: {size} bytes is over the {MAX_RESULT_BYTES} allowed")
        stream = self.result_stream
        client = self._ensure_broker().client
        maxlen = self.results_maxlen or None
        entry_id = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: client.xadd(stream, fields, maxlen=maxlen, approximate=True),  # type: ignore[arg-type]
        )
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    # -- metrics and capacity ------------------------------------------------------------------
    def original_counters(self) -> dict[str, Any]:
        """The original's counters by its names (``/health`` answers them too)."""
        snapshot = self.stats.snapshot()
        return {
            "frames_processed": snapshot["processed"],
            "errors_total": snapshot["failed"] + snapshot["rejected"],
            "uptime_seconds": round(self.stats.uptime_s(), 3),
            "capacity_used": snapshot["in_flight"],
        }

    def get_metrics(self) -> dict[str, Any]:
        """The original's metrics (``processor_id``, ``frames_processed``, ``errors_total``,
        ``capacity``, ``capacity_used``, ``uptime_seconds``) beside frameflow's own counters."""
        return {
            "processor_id": self.processor_id,
            "capacity": self.capacity,
            **self.original_counters(),
            "capabilities": list(self.capabilities),
            "available_capacity": self.get_available_capacity(),
            **self.stats.snapshot(),
        }

    def get_available_capacity(self) -> int:
        """Frames this processor could start now: ``capacity`` less those in flight."""
        return max(0, self.capacity - self.stats.snapshot()["in_flight"])

    def is_at_capacity(self) -> bool:
        """True while ``capacity`` frames (or more, just after a shrink) are in flight."""
        return self.get_available_capacity() == 0

    # -- live reconfiguration -------------------------------------------------------------------
    async def update_configuration(self, changes: Mapping[str, Any]) -> None:
        """Change ``capacity`` and/or ``capabilities`` while running.

        The concurrency bound changes at once (frames beyond a smaller bound finish; no new one
        starts until below it); the registry entry is rewritten now, so routers follow within
        their cache's refresh (well inside one heartbeat); frames parked for a capability this
        processor now offers are released to it.

        Raises:
          ConfigurationRefused: an unknown setting or a bad value; then nothing changes.
        """
        capacity, capabilities = _checked(changes, self.capacity, self.capabilities)
        self.capacity, self.capabilities = capacity, capabilities
        self._slots.resize(capacity)
        if self._owns_worker and self._worker is not None:
            fit_worker(self._worker, self.queue_name, capacity, prefetch_for(capacity, self.queue_bound, self.overflow))
        await asyncio.get_running_loop().run_in_executor(None, self._publish_configuration)
        logger.info("Processor %s now has capacity %d, capabilities %s.", self.processor_id, capacity, capabilities)

    def _publish_configuration(self) -> None:
        if self._registry is None or self._withdrawn:
            return  # not registered: register() and start() announce the new values
        self._registry.update(self.processor_id, capacity=self.capacity, capabilities=json.dumps(self.capabilities))
        self._release_parked()

    # -- async with ------------------------------------------------------------------------------
    async def __aenter__(self) -> OriginalClientApi:
        """Start the processor (as ``start()`` does) and return once it is registered and consuming."""
        self._online = asyncio.Event()
        self._running = asyncio.create_task(self.start(), name=f"processor-{self.processor_id}")
        online = asyncio.create_task(self._online.wait())
        await asyncio.wait({self._running, online}, return_when=asyncio.FIRST_COMPLETED)
        if not self._online.is_set():
            online.cancel()
            self._running.result()  # start() failed: its error
            raise FrameflowError(f"processor {self.processor_id} stopped before it came online")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Stop gracefully: leave the registry, let frames in flight finish, close the worker."""
        self.stop()
        if self._running is not None:
            running, self._running = self._running, None
            await running

    def _came_online(self) -> None:
        """Called by ``start()`` once registered and consuming."""
        if self._online is not None:
            self._online.set()


def _checked(changes: Mapping[str, Any], capacity: int, capabilities: list[str]) -> tuple[int, list[str]]:
    if not isinstance(changes, Mapping):
        raise ConfigurationRefused(f"update_configuration takes a dict, not {type(changes).__name__}")
    unknown = sorted(str(name) for name in changes if name not in CONFIGURABLE)
    if unknown:
        known = ", ".join(CONFIGURABLE)
        raise ConfigurationRefused(f"unknown setting(s) {', '.join(unknown)}: only {known} change live")
    new_capacity = changes.get("capacity", capacity)
    if not isinstance(new_capacity, int) or isinstance(new_capacity, bool) or new_capacity < 1:
        raise ConfigurationRefused(f"capacity must be an integer of at least 1, not {new_capacity!r}")
    new_capabilities = changes.get("capabilities", capabilities)
    if (
        not isinstance(new_capabilities, list | tuple)
        or not new_capabilities
        or not all(isinstance(name, str) and name for name in new_capabilities)
    ):
        raise ConfigurationRefused(f"capabilities must be a non-empty list of names, not {new_capabilities!r}")
    return new_capacity, list(dict.fromkeys(new_capabilities))


def fit_worker(worker: dramatiq.Worker, queue_name: str, capacity: int, prefetch: int) -> None:
    """Let a worker ``ProcessorClient.start()`` made run ``capacity`` frames and hold ``prefetch``
    (:func:`~.slots.prefetch_for`).

    Its consumer prefetches a frame or two per slot (a finished thread may start its next frame
    without waiting for Redis; the rest stay in Redis for a less busy peer);
    worker threads are added when it grows (Dramatiq has no public call for that; a thread
    beyond a smaller capacity just waits for a prefetched frame, the slots bound the rest).
    """
    worker.queue_prefetch = prefetch
    consumer_thread = worker.consumers.get(queue_name)
    if consumer_thread is not None:
        consumer_thread.prefetch = prefetch
        consumer = getattr(consumer_thread, "consumer", None)
        if consumer is not None and hasattr(consumer, "prefetch"):
            consumer.prefetch = prefetch
    while len(worker.workers) < capacity:
        worker._add_worker()
    worker.worker_threads = max(worker.worker_threads, capacity)
