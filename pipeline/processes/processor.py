"""``ProcessorClient``: the seed's processor API, on Dramatiq workers.

A processor written for the seed migrates by changing its import::

    from pipeline import ProcessorClient

It runs two ways:

* the seed's: ``asyncio.run(processor.start())`` — ``start()`` builds a broker
  and a Dramatiq :class:`~dramatiq.Worker` in this process, registers, heartbeats
  and consumes until :meth:`stop` (safe from a signal handler);
* Dramatiq's: a module that calls :meth:`attach` on the global broker at import,
  run with ``dramatiq pipeline.broker workers.x``; the worker's boot starts the
  processor (``start()``, model loading included) on an event-loop thread and its
  shutdown stops it.

``orchestrator_url`` is accepted for compatibility and otherwise unused: the
orchestrator is no longer a service but the routing middleware every producer
carries, and everything meets in Redis.

A processor whose id ``FRAMEFLOW_ALLOWED_PROCESSORS`` does not allow never starts (:meth:`ensure_allowed`).

The original client's other public methods (``register``, ``unregister``, ``publish_result``,
``get_metrics``, ``update_configuration``, ``async with``, ...) live in :mod:`.original_api`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import CurrentMessage
from prometheus_client import REGISTRY

from middleware.affinity import AFFINITIES
from middleware.breaker import CircuitBreaker
from middleware.freshness import FrameFreshness
from middleware.observability import add_observability
from middleware.processor_guard import guard_processor_queue
from middleware.routing import CapabilityRouter, router_of
from pipeline.domain.frames import IMAGE_REF_FIELD, frame_size_limit
from pipeline.domain.kept_images import kept_image
from pipeline.domain.keys import processor_queue
from pipeline.domain.process_entries import ProcessEntries, summed_counters
from pipeline.domain.registry import ProcessorInfo, ProcessorRegistry
from pipeline.domain.results import result_fields
from pipeline.domain.telemetry import current_trace_context
from pipeline.errors import EndpointUnavailable, FrameflowError, FrameRefused, RegistrationRefused, UnprocessableFrame
from pipeline.settings import Settings, processor_allowed
from pipeline.streams.broker import RedisStreamsBroker
from pipeline.streams.connection import connect
from pipeline.streams.consumer import StreamMessageProxy
from pipeline.streams.keys import validate_queue_name
from pipeline.streams.shared_redis import LOCAL_REDIS_URL

from .batching import FrameBatcher, overrides
from .build_info import register_build_info
from .frame_ack import acknowledge_frame
from .health import HealthServer
from .heartbeat import MISSED_BEATS, Heartbeat
from .intake import checked_frame, frame_data_of
from .lifecycle import STOP_TIMEOUT_S, ProcessorLifecycle
from .lifecycle import serve_with_dramatiq as serve_with_dramatiq  # processor modules import it from here
from .original_api import OriginalClientApi
from .processor_stats import ProcessorStats
from .redis_wait import wait_for_redis
from .slots import ProcessingSlots

logger = logging.getLogger(__name__)

#: The seed's default ``redis_url``; left at it, the environment decides, and without configuration it
#: means what it says when a Redis answers there (else the shared embedded one: ``streams/shared_redis.py``).
SEED_DEFAULT_REDIS_URL = LOCAL_REDIS_URL

#: The fields of a registry entry (what a process's own entry may carry of its stats).
_ENTRY_FIELDS = frozenset(field.name for field in dataclasses.fields(ProcessorInfo))


class ProcessorClient(OriginalClientApi):
    """Base class of a frame processor. Implement :meth:`process_frame` (async or plain),
    or :meth:`process_batch` to receive frames in micro-batches (``pipeline/processes/batching.py``).

    Parameters are the seed's; see the module docstring for ``orchestrator_url``.
    Class attributes a subclass may set: ``version``, ``queue_bound`` (frames
    waiting at most; 0 for none), ``overflow`` (``"drop_oldest"`` or
    ``"reject_newest"``), ``max_retries``, ``max_age_ms``, and for batching
    ``max_batch`` (frames per call at most, and never more than ``capacity``) and
    ``max_wait_ms`` (how long the first frame of a batch waits for others), and
    ``affinity`` (also a parameter): ``"camera"`` keeps each camera's frames on one
    instance of the capability (:mod:`middleware.affinity`), for processors that keep
    state per camera; ``None`` (the default): each frame goes to the least-loaded one.
    """

    version: str = "0"
    queue_bound: int = 100
    overflow: str = "drop_oldest"
    max_retries: int = 2
    max_age_ms: int | None = None
    max_batch: int = 8
    max_wait_ms: float = 10.0
    affinity: str | None = None

    def __init__(
        self,
        processor_id: str,
        capabilities: list[str],
        orchestrator_url: str,
        capacity: int = 10,
        redis_client: Any | None = None,
        redis_url: str = SEED_DEFAULT_REDIS_URL,
        result_stream: str | None = None,
        health_port: int | None = None,
        health_check_interval: float = 30.0,
        affinity: str | None = None,
    ) -> None:
        if not capabilities or not all(isinstance(capability, str) and capability for capability in capabilities):
            raise ValueError("capabilities must be a non-empty list of names")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if affinity is not None:
            self.affinity = affinity
        if self.affinity not in (None, *AFFINITIES):
            raise ValueError(f"affinity must be one of {', '.join(AFFINITIES)}, or None")
        self.processor_id = processor_id
        self.queue_name = validate_queue_name(processor_queue(processor_id))
        self.actor_name = f"process_frame.{processor_id}"
        self.capabilities = list(capabilities)
        self.orchestrator_url = orchestrator_url
        self.capacity = capacity
        self.redis_client = redis_client
        self.redis_url = _resolve_redis_url(redis_url)
        self.result_stream = result_stream
        self.health_port = health_port
        self.health_check_interval = health_check_interval
        self.stats = ProcessorStats()
        #: Larger frame images are refused unread (FRAMEFLOW_MAX_FRAME_BYTES, as for producers).
        self.max_frame_bytes = frame_size_limit()
        #: Result streams are capped at about this many entries (FRAMEFLOW_RESULTS_MAXLEN; 0: uncapped).
        self.results_maxlen = Settings.from_env().results_maxlen
        #: Seconds the image of a frame whose result found something is kept for snapshots (0: none).
        self.snapshot_ttl_s = Settings.from_env().snapshot_ttl_s
        #: Seconds start() waits for an unreachable Redis (FRAMEFLOW_WAIT_FOR_REDIS; 0: as long as it takes).
        self.wait_for_redis_s = Settings.from_env().wait_for_redis_s
        self.broker: RedisStreamsBroker | None = None
        self._slots = ProcessingSlots(capacity)  # resized by update_configuration
        self._worker: dramatiq.Worker | None = None
        self._owns_worker = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._stop_early = False
        self._heartbeat: Heartbeat | None = None
        self._health: HealthServer | None = None
        self._registry: ProcessorRegistry | None = None
        self._breaker = CircuitBreaker(self._publish_breaker)
        self._batcher: FrameBatcher | None = None
        if overrides(self, ProcessorClient, "process_batch"):
            self._batcher = FrameBatcher(
                self._run_batch,
                lambda: (min(self.max_batch, self.capacity), self.max_wait_ms / 1000),
                name=f"batcher-{processor_id}",
            )

    # -- what a processor implements ---------------------------------------------------------
    async def process_frame(self, frame_data: dict[bytes, bytes]) -> dict | None:
        """Process one frame (keys and values are bytes, as the seed documents).

        Return a dict to publish it on ``result_stream``, or ``None`` to publish nothing.
        """
        raise NotImplementedError

    def process_batch(self, frames: list[dict[bytes, bytes]]) -> list[dict | BaseException | None]:
        """Process several frames at once (async or plain); implementing it makes the client batch.

        Return one outcome per frame, in order: what :meth:`process_frame` would return, or
        an exception object that fails that frame alone (an :class:`UnprocessableFrame`, for a
        frame no retry can help, is dead-lettered at once). Each frame is then published,
        retried or dead-lettered on its own.
        """
        raise NotImplementedError

    # -- wiring ----------------------------------------------------------------------------
    def attach(self, broker: RedisStreamsBroker | None = None) -> RedisStreamsBroker:
        """Declare this processor's actor on ``broker`` (default: Dramatiq's global one)."""
        broker = broker or dramatiq.get_broker()  # type: ignore[assignment]
        if not isinstance(broker, RedisStreamsBroker):
            raise FrameflowError(f"ProcessorClient needs a RedisStreamsBroker, not {type(broker).__name__}")
        self.broker = broker
        for needed in (FrameFreshness, CapabilityRouter, CurrentMessage):
            if not any(isinstance(middleware, needed) for middleware in broker.middleware):
                broker.add_middleware(needed())
        add_observability(broker)  # log context, tracing and metrics, at the front of the stack
        guard_processor_queue(broker, self.queue_name, self.stats.rejected_with)  # right behind them
        dramatiq.actor(
            self._handle,
            broker=broker,
            actor_name=self.actor_name,
            queue_name=self.queue_name,
            max_retries=self.max_retries,
            min_backoff=100,
            max_backoff=2000,
            throws=(UnprocessableFrame,),
            **({"max_age_ms": self.max_age_ms} if self.max_age_ms else {}),
        )
        broker.add_middleware(ProcessorLifecycle(self))
        return broker

    def _ensure_broker(self) -> RedisStreamsBroker:
        if self.broker is None:
            client = self.redis_client or (connect(self.redis_url) if self.redis_url else None)
            self.attach(RedisStreamsBroker(client=client) if client is not None else RedisStreamsBroker())
        assert self.broker is not None
        return self.broker

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Register, consume and heartbeat until :meth:`stop`; then shut down gracefully.

        A Redis that does not answer yet is waited for (``pipeline/processes/redis_wait.py``);
        :meth:`stop` during that wait returns at once, having started nothing.

        Raises:
          RegistrationRefused: ``FRAMEFLOW_ALLOWED_PROCESSORS`` does not allow this id.
          SystemExit: Redis did not answer within ``wait_for_redis_s`` (one line, exit code 1).
        """
        self.ensure_allowed()
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        if self._stop_early:
            self._stop_requested.set()
        # Only when start() makes its client from redis_url: a broker attached by Dramatiq's CLI, or a
        # given redis_client, is its maker's to wait for.
        url = self.redis_url if self.broker is None and self.redis_client is None else None
        if url and not await wait_for_redis(self.processor_id, url, self.wait_for_redis_s, self._stop_requested):
            logger.info("Processor %s stopped while waiting for Redis.", self.processor_id)
            return
        broker = self._ensure_broker()
        self._serve_health()  # before consuming: a port that cannot be bound stops it before any frame
        if self._worker is None:
            self._worker = dramatiq.Worker(
                broker, queues={self.queue_name}, worker_threads=self.capacity, worker_timeout=500
            )
            # Hold no more frames than can run: the rest stay in Redis for a less busy peer.
            self._worker.queue_prefetch = self.capacity
            self._owns_worker = True
            broker.emit_after("process_boot")
            self._worker.start()
        await self._loop.run_in_executor(None, self._come_online)
        self._came_online()
        logger.info("Processor %s is consuming %s.", self.processor_id, self.queue_name)
        await self._stop_requested.wait()
        await self._loop.run_in_executor(None, self._go_offline)

    def ensure_allowed(self) -> None:
        """Raise :class:`RegistrationRefused`, logged (ERROR), when the allow-list refuses this id:
        ``start()`` calls it before consuming anything, :func:`serve_with_dramatiq` before attaching.
        No metric counts it: the refused process exits, so its log line and exit code are the record."""
        allowed = Settings.from_env().allowed_processors
        if not processor_allowed(self.processor_id, allowed):
            refusal = RegistrationRefused(self.processor_id, allowed)
            logger.error("Registration refused: %s.", refusal)
            raise refusal

    def stop(self) -> None:
        """Ask :meth:`start` to finish. Safe to call from a signal handler or another thread."""
        loop, event = self._loop, self._stop_requested
        if loop is None or event is None:
            self._stop_early = True
            return
        loop.call_soon_threadsafe(event.set)

    def _come_online(self) -> None:
        broker = self._ensure_broker()
        self._registry = ProcessorRegistry(broker.client, broker.namespace)
        self._withdrawn = False
        self._register()
        self._heartbeat = Heartbeat(self._beat, self.health_check_interval, self.processor_id)
        self._heartbeat.start()
        self._release_parked()

    def _release_parked(self) -> None:
        """Route the frames parked for this processor's capabilities while it was not registered."""
        broker = self.broker
        router = router_of(broker) if broker is not None else None
        if broker is not None and router is not None:
            routed, dropped = router.release_parked(broker, self.capabilities)
            if routed or dropped:
                logger.info("Released parked frames: %d routed, %d dropped as stale.", routed, dropped)

    def _serve_health(self) -> None:
        """Serve ``/health`` and ``/metrics`` on ``health_port`` (0: any free one), before registering:
        the registry entry names the endpoint, with the port actually bound."""
        if self.health_port is None or self._health is not None:
            return
        host = Settings.from_env().health_host
        register_build_info(REGISTRY)
        try:
            self._health = HealthServer(self.health_report, self.health_port, host).start()
        except OSError as error:
            reason = error.strerror or error
            raise EndpointUnavailable(f"cannot serve health on {host}:{self.health_port}: {reason}") from None

    def _go_offline(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()  # first: a beat still running would register the processor again
        if self._registry is not None:
            self._withdrawn = True
            self._leave_registry()
        if self._owns_worker and self._worker is not None:
            self._worker.stop(timeout=int(STOP_TIMEOUT_S * 1000))
            self._worker = None
        if self._batcher is not None:
            self._batcher.close(timeout=STOP_TIMEOUT_S)
        if self._health is not None:
            self._health.stop()
            self._health = None
        if self._owns_worker and self.broker is not None:
            self.broker.close()

    def _register(self) -> None:
        assert self._registry is not None
        self._registry.register(self.info(), ttl_s=self.health_check_interval * MISSED_BEATS)
        self._process_entries().beat(self.process_info(), ttl_s=self.health_check_interval * MISSED_BEATS)

    def _beat(self) -> None:
        """This process's own entry, then the processor's, with the counters of all its processes."""
        assert self._registry is not None
        if self._withdrawn:
            return  # unregister(): out of the registry until register()
        ttl_s = self.health_check_interval * MISSED_BEATS
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

    def process_info(self, stats: dict[str, Any] | None = None) -> ProcessorInfo:
        """This process's own registry entry: :meth:`info` with its own pid and counters (``stats``,
        else a snapshot of them)."""
        stats = self.stats.snapshot() if stats is None else stats
        own = {name: value for name, value in stats.items() if name in _ENTRY_FIELDS}
        return dataclasses.replace(self.info(), **own)

    def info(self) -> ProcessorInfo:
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

    def health_report(self) -> tuple[bool, dict[str, Any]]:
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

    def _publish_breaker(self, state: str, since: float) -> None:
        if self._registry is not None:
            self._registry.update(self.processor_id, breaker=state, breaker_since=since)

    # -- the actor -------------------------------------------------------------------------
    def _handle(self, *args: Any, **kwargs: Any) -> None:
        broker = self.broker
        assert broker is not None
        delivery = CurrentMessage.get_current_message()  # the queue entry this call acknowledges
        try:
            frame = checked_frame(args, kwargs, self.max_frame_bytes)
            image_ref = frame.get(IMAGE_REF_FIELD)
            frame_data = frame_data_of(broker, self.queue_name, frame, self.max_frame_bytes)
        except UnprocessableFrame as error:
            refusal = FrameRefused.of(error)  # rejected, never started: not a failure of the processor
            self.stats.rejected_with(refusal)
            raise refusal from None
        with self._slots:
            self.stats.started()
            began = time.perf_counter()
            try:
                result = self._call(frame_data)
            except BaseException as error:
                self.stats.failed_with(error)
                if not isinstance(error, UnprocessableFrame):
                    self._breaker.record_failure()
                raise
            latency_ms = (time.perf_counter() - began) * 1000
            self.stats.succeeded(latency_ms)
        self._breaker.record_success()
        fields = None
        if result is not None and self.result_stream:
            fields = result_fields(
                result,
                frame,
                processor_id=self.processor_id,
                latency_ms=latency_ms,
                trace_context=current_trace_context(),  # the processing span: consumers continue the trace
            )
        if isinstance(delivery, StreamMessageProxy):
            acknowledge_frame(
                broker,
                delivery,
                image_ref=image_ref,
                result_stream=self.result_stream,
                result=fields,
                results_maxlen=self.results_maxlen,
                # opt-in (FRAMEFLOW_SNAPSHOT_TTL_S): a short-lived copy of the image for snapshots
                kept_image=kept_image(broker.namespace, frame, frame_data, result, self.snapshot_ttl_s),
            )

    def _call(self, frame_data: dict[bytes, bytes]) -> dict | None:
        if self._batcher is not None:
            return self._batcher.submit(frame_data)
        return self._resolved(self.process_frame(frame_data), "process_frame")

    def _run_batch(self, frames: list[dict[bytes, bytes]]) -> list[dict | BaseException | None]:
        return self._resolved(self.process_batch(frames), "process_batch")

    def _resolved(self, outcome: Any, method: str) -> Any:
        if inspect.isawaitable(outcome):
            loop = self._loop
            if loop is None or not loop.is_running():
                raise FrameflowError(f"{method} is async but the processor's event loop is not running")
            return asyncio.run_coroutine_threadsafe(_awaited(outcome), loop).result()
        return outcome


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _resolve_redis_url(redis_url: str) -> str | None:
    """The seed's default URL yields to the environment (REDIS_URL, or REDIS_HOST/REDIS_PORT); ``None``
    without one, so that the broker looks for localhost:6379 or the shared embedded Redis and says which."""
    if redis_url != SEED_DEFAULT_REDIS_URL:
        return redis_url
    return Settings.from_env().redis_url or None
