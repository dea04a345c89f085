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
``get_metrics``, ``update_configuration``, ``async with``, ...) live in :mod:`.original_api`;
registering, heartbeats and leaving (``info``, ``process_info``) in :mod:`.presence`; the health
report and its endpoint (``health_report``) in :mod:`.processor_health`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from middleware.affinity import AFFINITIES
from middleware.breaker import CircuitBreaker
from middleware.freshness import FrameFreshness
from middleware.observability import add_observability
from middleware.processor_guard import guard_processor_queue, leaf_middleware
from middleware.routing import CapabilityRouter
from pipeline.domain.frames import IMAGE_REF_FIELD, frame_size_limit
from pipeline.domain.kept_images import kept_image
from pipeline.domain.keys import processor_queue
from pipeline.domain.results import result_fields
from pipeline.domain.telemetry import current_trace_context
from pipeline.errors import FrameflowError, FrameRefused, RegistrationRefused, UnprocessableFrame
from pipeline.settings import Settings, processor_allowed
from pipeline.streams.broker import RedisStreamsBroker
from pipeline.streams.connection import connect
from pipeline.streams.consumer import StreamMessageProxy
from pipeline.streams.durability import Durability
from pipeline.streams.keys import validate_queue_name
from pipeline.streams.shared_redis import LOCAL_REDIS_URL

from .batching import FrameBatcher, overrides
from .frame_ack import acknowledge_frame
from .heap import settle_heap
from .intake import checked_frame, frame_data_of
from .lifecycle import STOP_TIMEOUT_S, ProcessorLifecycle
from .lifecycle import serve_with_dramatiq as serve_with_dramatiq  # processor modules import it from here
from .original_api import OriginalClientApi
from .presence import RegistryPresence
from .processor_health import HealthReporting
from .processor_stats import ProcessorStats
from .redis_wait import wait_for_redis
from .slots import ProcessingSlots, prefetch_for

logger = logging.getLogger(__name__)

#: The seed's default ``redis_url``; left at it, the environment decides, and without configuration it
#: means what it says when a Redis answers there (else the shared embedded one: ``streams/shared_redis.py``).
SEED_DEFAULT_REDIS_URL = LOCAL_REDIS_URL


class ProcessorClient(OriginalClientApi, RegistryPresence, HealthReporting):
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
    ``settles_heap``: freeze the process's start-up objects out of the garbage collector's scans before
    the first frame (:mod:`.heap`; default True; False for a processor embedded in a process that
    manages its own collector).
    ``durability`` (``"primary"`` or ``"replicated"``) and ``replica_timeout_ms`` set what the
    processor's acks and results wait for, as for :class:`~pipeline.processes.producer.FrameProducer`
    (:mod:`pipeline.streams.durability`); left out, ``FRAMEFLOW_DURABILITY`` decides (its broker's).
    """

    version: str = "0"
    queue_bound: int = 100
    overflow: str = "drop_oldest"
    max_retries: int = 2
    max_age_ms: int | None = None
    max_batch: int = 8
    max_wait_ms: float = 10.0
    affinity: str | None = None
    settles_heap: bool = True

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
        durability: str | None = None,
        replica_timeout_ms: int | None = None,
    ) -> None:
        if not capabilities or not all(isinstance(capability, str) and capability for capability in capabilities):
            raise ValueError("capabilities must be a non-empty list of names")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if affinity is not None:
            self.affinity = affinity
        if self.affinity not in (None, *AFFINITIES):
            raise ValueError(f"affinity must be one of {', '.join(AFFINITIES)}, or None")
        #: What acks and results wait for, when given here (else the broker's: FRAMEFLOW_DURABILITY).
        self.durability = (
            None
            if durability is None and replica_timeout_ms is None
            else Durability.chosen(durability, replica_timeout_ms)
        )
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
        self._heartbeat = None  # typed in RegistryPresence, as _registry and HealthReporting's _health
        self._health = None
        self._registry = None
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
        if self.durability is not None:
            broker.durability = self.durability
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
            # Its own broker serves only this processor's guarded queue: no Callbacks, no Pipelines.
            self.attach(RedisStreamsBroker(client=client, middleware=leaf_middleware()))
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
            # Hold a frame or two per slot, no more: the rest stay in Redis for a less busy peer.
            self._worker.queue_prefetch = prefetch_for(self.capacity, self.queue_bound, self.overflow)
            self._owns_worker = True
            broker.emit_after("process_boot")
            self._worker.start()
        if self.settles_heap:
            settle_heap()  # before the first frame: no full collection of start-up's objects while frames flow
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

    def _go_offline(self) -> None:
        self._go_absent()  # first: no new frames routed here
        if self._owns_worker and self._worker is not None:
            self._worker.stop(timeout=int(STOP_TIMEOUT_S * 1000))
            self._worker = None
        if self._batcher is not None:
            self._batcher.close(timeout=STOP_TIMEOUT_S)
        self._stop_health()
        if self._owns_worker and self.broker is not None:
            self.broker.close()

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
        if outcome is None or type(outcome) is dict:  # a plain method's answer: nothing to await
            return outcome
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
