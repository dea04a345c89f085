"""The bridge's Prometheus metrics, in a registry of its own, served at ``/metrics``.

``frameflow_mqtt_events_published_total{type}``: events (new/update/end) the broker acknowledged;
``frameflow_mqtt_messages_published_total{kind}``: every message (event, count, snapshot, discovery,
availability); ``frameflow_mqtt_reconnects_total``: connections after the first;
``frameflow_mqtt_publish_latency_seconds``: from publish to the broker's PUBACK;
``frameflow_mqtt_backlog{stream}``: results not yet acknowledged by the bridge (lag + pending),
read from Redis when scraped; ``frameflow_mqtt_results_skipped_total{reason}``: entries that were
not usable results; ``frameflow_mqtt_snapshots_missing_total``: best frames whose image was gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class BridgeMetrics:
    def __init__(self, backlog: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "frameflow_mqtt_events_published",
            "Track events acknowledged by the broker",
            ["type"],
            registry=self.registry,
        )
        self.messages = Counter(
            "frameflow_mqtt_messages_published",
            "MQTT messages acknowledged by the broker",
            ["kind"],
            registry=self.registry,
        )
        self.reconnects = Counter(
            "frameflow_mqtt_reconnects", "Connections to the broker after the first", registry=self.registry
        )
        self.latency = Histogram(
            "frameflow_mqtt_publish_latency_seconds",
            "From publish to the broker's acknowledgement (QoS 1)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.skipped = Counter(
            "frameflow_mqtt_results_skipped",
            "Result entries that were not usable results",
            ["reason"],
            registry=self.registry,
        )
        self.snapshots_missing = Counter(
            "frameflow_mqtt_snapshots_missing", "Best frames whose kept image was gone", registry=self.registry
        )
        self.registry.register(_Backlog(backlog))


class _Backlog(Collector):
    def __init__(self, backlog: Callable[[], dict[str, int]]) -> None:
        self._backlog = backlog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "frameflow_mqtt_backlog", "Results the bridge has not acknowledged yet (lag + pending)", labels=["stream"]
        )
        try:
            backlog = self._backlog()
        except Exception:  # Redis away: no sample rather than a failed scrape
            backlog = {}
        for stream, count in backlog.items():
            family.add_metric([stream], count)
        yield family
