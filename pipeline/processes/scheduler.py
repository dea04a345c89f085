"""``frameflow scheduler``: the pipeline's own housekeeping, on APScheduler.

Every ``interval_s`` it

* emits the pipeline's health heartbeat: one entry on ``<ns>:health`` with the
  processors up and down, their backlogs and the frames processed per second
  (the sum of the rates the processors' own heartbeats measured), for a consumer
  (an alarm, Home Assistant) to watch;
* reaps dead processors, with one WARNING line each naming it and how long ago its
  last heartbeat was (as this scheduler last saw it): a processor whose registry entry expired has its queue
  re-routed, frame by frame, to live peers with the same capability (frames past
  their max age are dropped and counted as stale), then its queue is deleted and
  its id forgotten. Each frame is moved in one transaction, so a scheduler killed
  half-way (or two at once) re-routes no frame twice and loses none;
* releases frames parked for a capability that a live processor offers again;
* trims dead letters older than their TTL;
* removes from the queues' consumer groups the consumers of dead workers (they hold nothing
  and showed no sign of life for ``FRAMEFLOW_IDLE_CONSUMER_S``: :mod:`.idle_consumers`), at
  most four times per that period.

With ``--metrics-port`` it serves ``/metrics`` (the pipeline-wide numbers only Redis knows),
``/targets`` (every processor process's ``/metrics``, for Prometheus's HTTP service discovery)
and ``/health`` (whether Redis answers and the jobs keep running).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from prometheus_client import CollectorRegistry

from middleware.routing import router_of
from pipeline.domain.claim_check import release_images
from pipeline.domain.frames import is_stale
from pipeline.domain.keys import health_stream, parked_key, processor_queue, reaping_lock_key
from pipeline.domain.process_entries import ProcessEntries, each_process
from pipeline.domain.registry import ProcessorRegistry
from pipeline.errors import MalformedEntry
from pipeline.settings import Settings
from pipeline.streams.broker import PROMOTE_BATCH, RedisStreamsBroker
from pipeline.streams.connection import TRANSIENT_ERRORS
from pipeline.streams.keys import QueueKeys, namespace_pattern, queue_name_for
from pipeline.streams.wire import decode_entry
from pipeline.version import __version__

from .build_info import register_build_info
from .health import HealthServer
from .idle_consumers import remove_idle_consumers
from .queue_metrics import PipelineCollector, scrape_targets

logger = logging.getLogger(__name__)

#: Entries kept on the health stream (approximately).
HEALTH_STREAM_LENGTH = 10_000

#: The shortest time a reaping lock outlives its scheduler's last move (see ``PipelineScheduler.lock_ms``).
REAP_LOCK_MIN_S = 2.0

#: How many times one reaping reads a dead processor's queue again when frames keep arriving.
REAP_PASSES = 5

#: How many idle-consumer passes run per ``idle_consumer_s``: a consumer is removed at most a
#: quarter of that period later than it could be, and the queues are not scanned every tick.
IDLE_PASSES_PER_PERIOD = 4

#: A time after every retry's eta (ms since the epoch): promotes all delayed retries at once.
FAR_FUTURE_MS = 2**52

#: Intervals the jobs may go without a run before ``/health`` says the scheduler is unhealthy.
MISSED_TICKS = 3


class PipelineScheduler:
    """The scheduler's jobs; :meth:`run` blocks, :meth:`start` runs them in the background.

    Parameters:
      broker: a broker carrying the routing middleware.
      interval_s: how often each job runs.
      idle_consumer_s: how long a consumer holding nothing may show no sign of life before it
        is removed from its group; defaults to ``FRAMEFLOW_IDLE_CONSUMER_S`` (300).
    """

    def __init__(
        self, broker: RedisStreamsBroker, *, interval_s: float = 5.0, idle_consumer_s: float | None = None
    ) -> None:
        router = router_of(broker)
        if router is None:
            raise ValueError("the scheduler needs a broker with the routing middleware")
        self.broker = broker
        self.router = router
        self.interval_s = interval_s
        self.idle_consumer_s = idle_consumer_s or Settings.from_env().idle_consumer_s
        self._next_idle_pass = 0.0
        self.registry = ProcessorRegistry(broker.client, broker.namespace)
        self.health_stream = health_stream(broker.namespace)
        #: The last heartbeat time seen of each live processor, for the reaping's log line.
        self._last_heartbeat: dict[str, float] = {}
        self._scheduler: BackgroundScheduler | BlockingScheduler | None = None
        #: What ``/metrics`` serves (see :meth:`serve_metrics`): the pipeline's queues, read at scrape time.
        self.metrics = CollectorRegistry(auto_describe=True)
        self.metrics.register(PipelineCollector(broker.client, broker.namespace))
        register_build_info(self.metrics)
        self._metrics_server: HealthServer | None = None
        self.started_at = time.time()
        #: When each job last ran to its end (seconds since the epoch), for ``/health``.
        self.jobs_last_run: dict[str, float] = {}
        self.last_error = ""

    # -- jobs ------------------------------------------------------------------------------
    def tick(self) -> dict[str, Any]:
        """Run every job once (what each interval does); returns the health entry."""
        reaped = self._timed(self.reap_dead)
        self._timed(self.release_parked)
        self._timed(self.trim_dead_letters)
        self._timed(self.remove_idle_consumers)
        health = self._timed(self.emit_health)
        health["reaped"] = reaped
        return health

    def _timed(self, job: Callable[[], Any]) -> Any:
        outcome = job()
        self.jobs_last_run[job.__name__] = time.time()
        return outcome

    def emit_health(self) -> dict[str, Any]:
        processors = self.registry.list(include_dead=True)
        live = [info for info in processors if info.alive]
        pipe = self.broker.client.pipeline(transaction=False)
        for info in live:
            pipe.xlen(self.broker.keys_for(info.queue_name).stream)
        backlogs = dict(zip((info.processor_id for info in live), pipe.execute(), strict=True))
        entry = {
            "at": repr(time.time()),
            "processors_up": str(len(live)),
            "processors_down": str(len(processors) - len(live)),
            "up": json.dumps(sorted(info.processor_id for info in live)),
            "down": json.dumps(sorted(info.processor_id for info in processors if not info.alive)),
            "backlog": json.dumps(backlogs, sort_keys=True),
            "frames_per_s": f"{sum(info.frames_per_s for info in live):.2f}",
        }
        self.broker.client.xadd(self.health_stream, entry, maxlen=HEALTH_STREAM_LENGTH, approximate=True)  # type: ignore[arg-type]
        return entry

    def reap_dead(self) -> dict[str, int]:
        """Re-route the queues of dead processors; returns ``{processor_id: frames re-routed}``."""
        reaped: dict[str, int] = {}
        listed = self.registry.list(include_dead=True)
        self._last_heartbeat = {
            info.processor_id: self._last_heartbeat[info.processor_id]
            for info in listed
            if info.processor_id in self._last_heartbeat
        }  # forgotten ids go
        for info in listed:
            if info.alive:
                self._last_heartbeat[info.processor_id] = info.heartbeat_at
                continue
            rerouted = self.reap(info.processor_id)
            if rerouted is not None:
                reaped[info.processor_id] = rerouted
                logger.warning(
                    "Reaped dead processor %s (%s); %d queued frame(s) re-routed to live peers.",
                    info.processor_id,
                    self._last_heartbeat_seen(info.processor_id),
                    rerouted,
                )
        return reaped

    def _last_heartbeat_seen(self, processor_id: str) -> str:
        beat_at = self._last_heartbeat.get(processor_id)
        if beat_at is None:
            return "no heartbeat of it seen by this scheduler"
        return f"last heartbeat {max(0.0, time.time() - beat_at):.1f}s ago"

    def reap(self, processor_id: str) -> int | None:
        """Re-route the queue of one processor that is not live and forget its id; returns the
        frames re-routed, or None when another scheduler is reaping it (``frameflow deregister``).

        Each frame is moved exactly once (:meth:`CapabilityRouter.move`): a scheduler killed
        half-way leaves the rest of the queue, untouched, to the next run. The lock only keeps
        two schedulers from doing the same work; it lapses ``lock_ms`` after the last frame a
        scheduler moved, so a killed scheduler's successor takes over within seconds.
        """
        lock = reaping_lock_key(self.broker.namespace, processor_id)
        token = uuid.uuid4().hex
        if not self.broker.client.set(lock, token, nx=True, px=self.lock_ms):
            return None
        try:
            return self._reroute_backlog(processor_id, lambda: self.broker.client.pexpire(lock, self.lock_ms))
        finally:
            self.broker.scripts["release_lock"](keys=[lock], args=[token])

    @property
    def lock_ms(self) -> int:
        """How long a reaping lock outlives the last sign of life of the scheduler holding it."""
        return int(max(2 * self.interval_s, REAP_LOCK_MIN_S) * 1000)

    def _reroute_backlog(self, processor_id: str, still_reaping: Callable[[], object]) -> int:
        """Move every frame of a dead processor's queue, its pending retries included, and delete
        the queue once it is empty; a queue still written to (a router's cached registry) is read
        again, up to :data:`REAP_PASSES` times, then left to the next tick, never deleted unread."""
        keys = self.broker.keys_for(processor_queue(processor_id))
        rerouted = 0
        for _ in range(REAP_PASSES):
            self._promote_retries(keys)
            moved = self._reroute_entries(processor_id, keys, still_reaping)
            if moved is None:
                logger.info("Processor %s came back; leaving the rest of its queue to it.", processor_id)
                return rerouted
            rerouted += moved
            if self.broker.scripts["delete_if_drained"](keys=[keys.stream, keys.delayed]):
                if self.registry.get(processor_id) is None:  # not registered again meanwhile
                    self.registry.forget([processor_id])
                break
        else:
            logger.warning("The queue of dead processor %s is still being written to; next tick.", processor_id)
        if rerouted:
            logger.info("Re-routed %d frame(s) of dead processor %s.", rerouted, processor_id)
        return rerouted

    def _promote_retries(self, keys: QueueKeys) -> None:
        """Move the queue's delayed retries into its stream, due or not (``claim.lua`` with a time
        past every eta and nothing to claim): a dead processor will never run them."""
        while self.broker.client.zcard(keys.delayed):
            self.broker.scripts["claim"](
                keys=list(keys),
                args=[self.broker.group, self.broker.consumer_name, FAR_FUTURE_MS, self.broker.lease_ms,
                      self.broker.max_deliveries, 0, self.broker.dead_letter_ttl_ms,
                      queue_name_for(keys.stream), PROMOTE_BATCH],
            )  # fmt: skip

    def _reroute_entries(self, processor_id: str, keys: QueueKeys, still_reaping: Callable[[], object]) -> int | None:
        """Move each frame of the stream once; the frames moved, or None if the processor came back."""
        router = self.router
        rerouted = 0
        for entry_id, fields in self.broker.client.xrange(keys.stream):
            if self.registry.get(processor_id) is not None:
                return None
            still_reaping()
            try:
                message = decode_entry(fields)
            except MalformedEntry as error:
                self.broker.dead_letter(keys, entry_id, f"malformed entry: {error}", None)
                continue
            if is_stale(message.options):
                dropped = self.broker.scripts["drop_entry"](keys=[keys.stream, keys.drops], args=[entry_id, "stale"])
                release_images(self.broker, dropped[1:])  # the dropped copy's image reference, if it had one
            elif router.move(self.broker, keys.stream, entry_id, message, fields) is not None:
                rerouted += 1
        return rerouted

    def release_parked(self) -> tuple[int, int]:
        """Route the frames parked for capabilities a live processor now offers: a processor
        releases them when it starts, but not when it registers again after its entry
        expired (a Redis restart, a long pause); returns (routed, dropped as stale)."""
        offered = {capability for info in self.registry.list() for capability in info.capabilities}
        waiting = [
            capability
            for capability in sorted(offered)
            if self.broker.client.exists(parked_key(self.broker.namespace, capability))
        ]
        if not waiting:
            return 0, 0
        routed, dropped = self.router.release_parked(self.broker, waiting)
        if routed or dropped:
            logger.info("Released parked frames: %d routed, %d dropped as stale.", routed, dropped)
        return routed, dropped

    def trim_dead_letters(self) -> int:
        """Drop dead letters older than the broker's dead-letter TTL; returns how many went."""
        minimum = f"{int(time.time() * 1000) - self.broker.dead_letter_ttl_ms}-0"
        trimmed = 0
        for key in self.broker.client.scan_iter(match=namespace_pattern(self.broker.namespace, "dead"), count=500):
            trimmed += int(self.broker.client.xtrim(key, minid=minimum, approximate=False))
        return trimmed

    def remove_idle_consumers(self) -> int:
        """Remove the consumers of dead workers from every queue's group (:mod:`.idle_consumers`),
        unless a pass ran less than ``idle_consumer_s / IDLE_PASSES_PER_PERIOD`` ago; returns how many went."""
        now = time.monotonic()
        if now < self._next_idle_pass:
            return 0
        self._next_idle_pass = now + self.idle_consumer_s / IDLE_PASSES_PER_PERIOD
        return sum(len(names) for names in remove_idle_consumers(self.broker, self.idle_consumer_s).values())

    # -- running ---------------------------------------------------------------------------
    def _safe_tick(self) -> None:
        try:
            self.tick()
            self.last_error = ""
        except TRANSIENT_ERRORS as error:
            self.last_error = f"Redis unreachable: {error}"
            logger.warning("Scheduler tick skipped, Redis unreachable: %s", error)
        except Exception as error:
            self.last_error = f"{type(error).__name__}: {error}"
            logger.exception("Scheduler tick failed")

    def _add_job(self, scheduler: BackgroundScheduler | BlockingScheduler) -> None:
        scheduler.add_job(
            self._safe_tick,
            "interval",
            seconds=self.interval_s,
            id="frameflow-scheduler",
            max_instances=1,
            coalesce=True,
        )

    def start(self) -> None:
        """Run in a background thread (tests, embedding)."""
        self._scheduler = BackgroundScheduler(daemon=True)
        self._add_job(self._scheduler)
        self._scheduler.start()

    def run(self) -> None:
        """Run in the foreground until :meth:`stop` (the CLI; SIGTERM calls stop)."""
        self._scheduler = BlockingScheduler()
        self._add_job(self._scheduler)
        self._safe_tick()
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None

    def serve_metrics(self, port: int, host: str | None = None) -> int:
        """Serve the pipeline-wide metrics at ``http://host:port/metrics``, every live processor
        process's ``/metrics`` endpoint as Prometheus HTTP service discovery at ``/targets``, and
        :meth:`health_report` at ``/health`` (host: ``FRAMEFLOW_HEALTH_HOST``, 127.0.0.1 by default;
        port 0: any free one). Returns the port."""
        host = host or Settings.from_env().health_host
        server = HealthServer(self.health_report, port, host, registry=self.metrics, targets=self.scrape_targets)
        self._metrics_server = server.start()
        return server.port

    def scrape_targets(self) -> list[dict[str, Any]]:
        """Every live processor process's ``/metrics`` endpoint, for Prometheus's ``http_sd_configs``."""
        live = self.registry.list()
        processes = ProcessEntries(self.broker.client, self.broker.namespace).of_each(
            info.processor_id for info in live
        )
        return scrape_targets(each_process(live, processes))

    def health_report(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while Redis answers and the jobs ran within :data:`MISSED_TICKS` intervals
        (of their last run, or of the scheduler's start before the first)."""
        try:
            reachable = bool(self.broker.client.ping())
        except redis.RedisError:
            reachable = False
        last_run = self.jobs_last_run.get("emit_health", self.started_at)
        on_time = time.time() - last_run <= MISSED_TICKS * self.interval_s
        healthy = reachable and on_time
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "version": __version__,
            "redis_reachable": reachable,
            "interval_s": self.interval_s,
            "jobs_last_run": {name: round(at, 3) for name, at in sorted(self.jobs_last_run.items())},
            "last_error": self.last_error,
        }
        return healthy, body
