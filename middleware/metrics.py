"""Prometheus metrics of a worker process: what happened to each message it took.

Counted in the process, never in Redis, so a message costs no round trip: the
hooks update plain numbers under one lock per (processor, queue), twice per
delivery, and a collector turns them into Prometheus series when ``/metrics``
is scraped (the processor's health port). Pipeline-wide numbers that only Redis
knows (routed, dropped, parked, backlog, dead letters) come from the
scheduler's ``/metrics`` (:mod:`pipeline.processes.queue_metrics`).

Every series is labelled with ``processor`` (the processor a frame was routed
to; empty for plain actors) and ``queue``: label values come from deployment
configuration, never from a frame, so their number stays bounded.

Counters, per delivery:

* ``frameflow_frames_processed_total``: the actor returned;
* ``frameflow_frames_failed_total``: the actor raised (every attempt), refusals aside;
* ``frameflow_frames_rejected_total``: the frame was refused before its processing began
  (:class:`~pipeline.errors.FrameRefused`: raised by a processor's intake checks, or a
  skipped message failed by its options guard);
* ``frameflow_frames_retried_total``: ... and the Retries middleware sent it again;
* ``frameflow_frames_dead_lettered_total``: the message was dead-lettered (nacked).

Histograms (seconds):

* ``frameflow_queue_wait_seconds``: from entering the stream (its entry id's
  time; for a retry, when it fell due) to a worker thread taking it; every
  delivery, skipped ones included;
* ``frameflow_processing_seconds``: the actor's run; every delivery not skipped;
* ``frameflow_end_to_end_seconds``: a frame's capture (its ``captured_at_ms``) to
  its processing finishing, result published; every frame processed successfully.

Gauge: ``frameflow_frames_in_flight``, deliveries being processed now.

Put it at the front of the middleware list (:func:`middleware.add_observability`
does), so that its ``after_*`` hooks see what Retries decided.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dramatiq.middleware import Middleware
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from pipeline.errors import FrameRefused

if TYPE_CHECKING:
    import dramatiq

#: Bucket bounds (seconds) of the latency histograms: 1 ms to 1 min, then +Inf.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

LABELS = ("processor", "queue")

_COUNTERS = {
    "processed": "Deliveries whose actor returned.",
    "failed": "Deliveries whose actor raised (every attempt), refusals aside.",
    "rejected": "Frames refused before their processing began (intake checks, options guard).",
    "retried": "Failed deliveries sent again by the Retries middleware.",
    "dead_lettered": "Messages dead-lettered after their delivery.",
}
_HISTOGRAMS = {
    "queue_wait": ("frameflow_queue_wait_seconds", "From entering the stream to a worker taking it."),
    "processing": ("frameflow_processing_seconds", "How long the actor ran."),
    "end_to_end": ("frameflow_end_to_end_seconds", "From a frame's capture to its processing finishing."),
}


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        total, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            total += count
            buckets.append((floatToGoString(bound), total))
        return buckets


class _Series:
    """Everything counted for one (processor, queue); updated under its own lock."""

    __slots__ = (
        "dead_lettered",
        "end_to_end",
        "failed",
        "in_flight",
        "lock",
        "processed",
        "processing",
        "queue_wait",
        "rejected",
        "retried",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.processed = self.failed = self.rejected = self.retried = self.dead_lettered = self.in_flight = 0
        self.queue_wait, self.processing, self.end_to_end = _Histogram(), _Histogram(), _Histogram()


class MetricsStore(Collector):
    """The series of one registry, shared by every :class:`Metrics` middleware that reports there."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], _Series] = {}
        self._lock = threading.Lock()

    def get(self, processor: str, queue: str) -> _Series:
        key = (processor, queue)
        series = self.series.get(key)
        if series is None:
            with self._lock:
                series = self.series.setdefault(key, _Series())
        return series

    def describe(self) -> list[Metric]:
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        counters = [families[f"frameflow_frames_{name}"] for name in _COUNTERS]
        in_flight = families["frameflow_frames_in_flight"]
        histograms = [families[name] for name, _ in _HISTOGRAMS.values()]
        for key, series in sorted(self.series.items()):
            labels = list(key)
            with series.lock:
                counts = (series.processed, series.failed, series.rejected, series.retried, series.dead_lettered)
                running = series.in_flight
                observed = [
                    (histogram.cumulative(), histogram.sum)
                    for histogram in (series.queue_wait, series.processing, series.end_to_end)
                ]
            for family, count in zip(counters, counts, strict=True):
                family.add_metric(labels, count)
            in_flight.add_metric(labels, running)
            for family, (buckets, total) in zip(histograms, observed, strict=True):
                family.add_metric(labels, buckets, total)
        yield from families.values()

    @staticmethod
    def _families() -> dict[str, Metric]:
        families: dict[str, Metric] = {
            f"frameflow_frames_{name}": CounterMetricFamily(f"frameflow_frames_{name}", text, labels=LABELS)
            for name, text in _COUNTERS.items()
        }
        families["frameflow_frames_in_flight"] = GaugeMetricFamily(
            "frameflow_frames_in_flight", "Deliveries being processed now.", labels=LABELS
        )
        for name, text in _HISTOGRAMS.values():
            families[name] = HistogramMetricFamily(name, text, labels=LABELS)
        return families


_stores: dict[int, MetricsStore] = {}
_stores_lock = threading.Lock()


def store_for(registry: CollectorRegistry) -> MetricsStore:
    """The store registered in ``registry`` (once, however many middleware report there)."""
    with _stores_lock:
        store = _stores.get(id(registry))
        if store is None:
            store = _stores[id(registry)] = MetricsStore()
            registry.register(store)
        return store


class Metrics(Middleware):
    """Counts and times deliveries; see the module docstring for the metrics.

    Parameters:
      registry: where the metrics are exposed (default: prometheus-client's global
        registry, which the processor's ``/metrics`` serves).
    """

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        self.store = store_for(registry or REGISTRY)
        self._local = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        options = message.options
        series = self.store.get(str(options.get("processor") or ""), message.queue_name)
        waited = time.time() - _ready_at(message)
        with series.lock:
            series.queue_wait.observe(waited if waited > 0 else 0.0)
            series.in_flight += 1
        self._local.started = (series, time.perf_counter(), options.get("retries") or 0)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        started = getattr(self._local, "started", None)
        if started is None:
            return
        self._local.started = None
        series, began, retries_before = started
        ran = time.perf_counter() - began
        options = message.options
        if exception is None:
            captured_at_ms = options.get("captured_at_ms")
            since_capture = time.time() - int(captured_at_ms) / 1000 if captured_at_ms else None
            with series.lock:
                series.in_flight -= 1
                series.processing.observe(ran)
                series.processed += 1
                if since_capture is not None:
                    series.end_to_end.observe(since_capture if since_capture > 0 else 0.0)
            return
        retried = not message.failed and (options.get("retries") or 0) > retries_before
        with series.lock:
            series.in_flight -= 1
            series.processing.observe(ran)
            if isinstance(exception, FrameRefused):
                series.rejected += 1
            else:
                series.failed += 1
            if retried:
                series.retried += 1

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        started = getattr(self._local, "started", None)
        if started is not None:
            self._local.started = None
            refused = message.failed and isinstance(getattr(message, "_exception", None), FrameRefused)
            with started[0].lock:
                started[0].in_flight -= 1
                if refused:  # skipped and failed by a processor's options guard
                    started[0].rejected += 1

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        series = self.store.get(str(message.options.get("processor") or ""), message.queue_name)
        with series.lock:
            series.dead_lettered += 1


def _ready_at(message: Any) -> float:
    """When the message entered its stream (epoch seconds): its entry id's time, else its own timestamp."""
    entry_id = getattr(message, "entry_id", None)
    if entry_id is not None:
        head = entry_id.partition(b"-")[0]
        if head.isdigit():
            return int(head) / 1000
    return message.message_timestamp / 1000
