"""Pipeline-wide metrics that only Redis knows, read at scrape time (``frameflow scheduler --metrics-port``).

Workers count what they did in their own process (:mod:`middleware.metrics`);
what happens before a worker takes a frame, or to a processor as a whole, is in
Redis: frames routed to each queue (counted by every producer's router in the
round trip that routes them), drops (queue bound, stale, image expired, parked
frames nobody came for or beyond the parked bound), parked frames, backlogs, dead letters and the registry.
A scrape reads all of it in three round trips, however many frames flowed.

Labels are processor ids, queue names, capabilities and drop reasons: all
deployment configuration, never a frame id.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.domain.keys import counts_key, parked_counts_key, parked_drops_key, parked_key, processor_queue
from pipeline.domain.registry import BREAKER_OPEN, ProcessorInfo, ProcessorRegistry
from pipeline.streams.keys import CONSUMER_GROUP, queue_keys

#: The ``queue`` label of drops of parked frames: ``reason="unroutable"`` (stale before a processor
#: came), ``reason="overflow"`` (the oldest, beyond the parked bound).
PARKED_QUEUE = "parked"

#: The ``reason`` label of each field of the parked drops hash that is named otherwise.
PARKED_REASONS = {"stale": "unroutable"}


class PipelineCollector(Collector):
    """Collects the pipeline's queue and processor metrics from Redis on each scrape.

    Parameters:
      client: the Redis client.
      namespace: the broker's key namespace.
    """

    def __init__(self, client: redis.Redis, namespace: str = "frameflow") -> None:
        self.client = client
        self.namespace = namespace
        self.registry = ProcessorRegistry(client, namespace)

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration: collecting means asking Redis

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("frameflow_redis_up", "Whether the scheduler could read Redis for this scrape.")
        try:
            metrics = self._collect()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _collect(self) -> list[Metric]:
        processors = self.registry.list(include_dead=True)
        queues = [(info, info.queue_name or processor_queue(info.processor_id)) for info in processors]
        pipe = self.client.pipeline(transaction=False)
        for _, queue_name in queues:
            keys = queue_keys(self.namespace, queue_name)
            pipe.xlen(keys.stream)
            pipe.xinfo_groups(keys.stream)
            pipe.zcard(keys.delayed)
            pipe.xlen(keys.dead)
            pipe.hgetall(keys.drops)
            pipe.hgetall(counts_key(self.namespace, queue_name))
        pipe.hgetall(parked_counts_key(self.namespace))
        pipe.hgetall(parked_drops_key(self.namespace))
        replies = pipe.execute(raise_on_error=False)
        parked_counts, parked_drops = _text_map(replies[-2]), _text_map(replies[-1])
        capabilities = sorted(set(parked_counts) | {cap for info in processors for cap in info.capabilities})
        pipe = self.client.pipeline(transaction=False)
        for capability in capabilities:
            pipe.xlen(parked_key(self.namespace, capability))
        parked_now = pipe.execute(raise_on_error=False)

        labels = ["processor", "queue"]
        backlog = GaugeMetricFamily(
            "frameflow_queue_backlog", "Frames waiting that no worker has taken.", labels=labels
        )
        pending = GaugeMetricFamily(
            "frameflow_queue_pending", "Frames taken by a worker, not yet acked.", labels=labels
        )
        delayed = GaugeMetricFamily("frameflow_queue_delayed", "Retries waiting for their time.", labels=labels)
        dead = GaugeMetricFamily("frameflow_queue_dead_letters", "Dead letters kept for the queue.", labels=labels)
        routed = CounterMetricFamily("frameflow_frames_routed", "Frames routed to the queue.", labels=labels)
        dropped = CounterMetricFamily(
            "frameflow_frames_dropped", "Frames dropped, by reason.", labels=[*labels, "reason"]
        )
        for index, (info, queue_name) in enumerate(queues):
            length, groups, waiting, letters, drops, counts = replies[6 * index : 6 * index + 6]
            lag, taken = _lag_and_pending(length, groups)
            series = [info.processor_id, queue_name]
            backlog.add_metric(series, lag)
            pending.add_metric(series, taken)
            delayed.add_metric(series, _int(waiting))
            dead.add_metric(series, _int(letters))
            routed.add_metric(series, _int(_text_map(counts).get("routed")))
            for reason, count in sorted(_text_map(drops).items()):
                dropped.add_metric([*series, reason], _int(count))
        for field in sorted({"stale", *parked_drops}):
            dropped.add_metric(["", PARKED_QUEUE, PARKED_REASONS.get(field, field)], _int(parked_drops.get(field)))

        parked_total = CounterMetricFamily(
            "frameflow_frames_parked", "Frames parked: no live processor for a capability.", labels=["capability"]
        )
        parked = GaugeMetricFamily(
            "frameflow_parked_frames", "Frames parked now, by capability.", labels=["capability"]
        )
        for capability, waiting_now in zip(capabilities, parked_now, strict=True):
            parked_total.add_metric([capability], _int(parked_counts.get(capability)))
            parked.add_metric([capability], _int(waiting_now))
        return [backlog, pending, delayed, dead, routed, dropped, parked_total, parked, *_processor_metrics(processors)]


def _processor_metrics(processors: list[ProcessorInfo]) -> list[Metric]:
    now = time.time()
    up = GaugeMetricFamily(
        "frameflow_processor_up", "1 while the processor's registry entry lives.", labels=["processor"]
    )
    age = GaugeMetricFamily(
        "frameflow_processor_heartbeat_age_seconds",
        "Seconds since the processor's last heartbeat.",
        labels=["processor"],
    )
    breaker = GaugeMetricFamily(
        "frameflow_processor_breaker_open", "1 while the processor's circuit breaker is open.", labels=["processor"]
    )
    capacity = GaugeMetricFamily(
        "frameflow_processor_capacity", "Frames the processor runs at once.", labels=["processor"]
    )
    for info in processors:
        up.add_metric([info.processor_id], 1 if info.alive else 0)
        if info.alive:
            age.add_metric([info.processor_id], max(0.0, now - info.heartbeat_at))
            breaker.add_metric([info.processor_id], 1 if info.breaker == BREAKER_OPEN else 0)
            capacity.add_metric([info.processor_id], info.capacity)
    return [up, age, breaker, capacity]


def _lag_and_pending(length: Any, groups: Any) -> tuple[int, int]:
    """Lag (entries no consumer took) and pending of the ``workers`` group; a queue never read is all lag."""
    if not isinstance(length, int):
        return 0, 0
    for group in groups if isinstance(groups, list) else ():
        if group.get("name") in (CONSUMER_GROUP, CONSUMER_GROUP.encode()):
            taken = int(group.get("pending") or 0)
            lag = group.get("lag")
            return (int(lag) if lag is not None else max(0, length - taken)), taken
    return length, 0


def _text_map(reply: Any) -> dict[str, str]:
    if not isinstance(reply, dict):
        return {}
    return {_text(name): _text(value) for name, value in reply.items()}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def scrape_targets(processes: list[ProcessorInfo]) -> list[dict[str, Any]]:
    """Prometheus HTTP service discovery (``http_sd_configs``): one target per live process
    that serves ``/metrics`` (:func:`~pipeline.domain.process_entries.each_process`: a processor
    run as several processes has one per process), labelled with its processor's id and its pid.
    A process bound to every address (``FRAMEFLOW_HEALTH_HOST=0.0.0.0``) is reached through its
    host name."""
    groups = []
    for info in processes:
        if not info.alive or not info.health_endpoint:
            continue
        endpoint = urlsplit(info.health_endpoint)
        host = endpoint.hostname or ""
        if host in ("", "0.0.0.0", "::"):
            host = info.host
        if ":" in host:
            host = f"[{host}]"
        labels = {"processor": info.processor_id, "pid": str(info.pid)}
        groups.append({"targets": [f"{host}:{endpoint.port}"], "labels": labels})
    return groups
