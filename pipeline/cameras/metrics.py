"""The camera process's Prometheus metrics, read from the cameras' status when scraped.

``frameflow_camera_frames_received_total{camera}``: frames decoded or received;
``frameflow_camera_frames_published_total{camera}``: frames handed to the pipeline;
``frameflow_camera_frames_skipped_total{camera,reason}``: frames never published, by why
(``fps_cap``: a newer frame replaced it, ``stale``: older than ``max_age`` when its turn came,
``not_keyframe``: not decoded under ``keyframes_only``, ``corrupt``, ``rejected``, ``redis``);
``frameflow_camera_reconnects_total{camera}``; ``frameflow_camera_connected{camera}`` (1 or 0);
``frameflow_camera_last_frame_age_seconds{camera}``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .status import CameraStatus


def camera_registry(statuses: Iterable[CameraStatus]) -> CollectorRegistry:
    """A registry of its own holding the cameras' metrics (served at ``/metrics``)."""
    registry = CollectorRegistry()
    registry.register(_CameraCollector(list(statuses)))
    return registry


class _CameraCollector(Collector):
    def __init__(self, statuses: list[CameraStatus]) -> None:
        self.statuses = statuses

    def collect(self) -> Iterator[Metric]:
        received = CounterMetricFamily(
            "frameflow_camera_frames_received", "Frames decoded or received", labels=["camera"]
        )
        published = CounterMetricFamily("frameflow_camera_frames_published", "Frames published", labels=["camera"])
        skipped = CounterMetricFamily(
            "frameflow_camera_frames_skipped", "Frames never published, by reason", labels=["camera", "reason"]
        )
        reconnects = CounterMetricFamily("frameflow_camera_reconnects", "Reconnects after a loss", labels=["camera"])
        connected = GaugeMetricFamily("frameflow_camera_connected", "1 while the camera delivers", labels=["camera"])
        age = GaugeMetricFamily(
            "frameflow_camera_last_frame_age_seconds", "Seconds since the last frame came in", labels=["camera"]
        )
        now = time.monotonic()
        for status in self.statuses:
            camera = status.camera_id
            frames_in, frames_out, reconnect_count, skips = status.totals()
            received.add_metric([camera], frames_in)
            published.add_metric([camera], frames_out)
            reconnects.add_metric([camera], reconnect_count)
            for reason, count in sorted(skips.items()):
                skipped.add_metric([camera, reason], count)
            connected.add_metric([camera], 1 if status.connected else 0)
            if status.last_frame_at is not None:
                age.add_metric([camera], now - status.last_frame_at)
        yield from (received, published, skipped, reconnects, connected, age)
