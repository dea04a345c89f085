"""``frameflow_build_info{version=...} 1``: which frameflow each scraped process runs.

The usual Prometheus idiom for a version: a gauge that is always 1, the version in a label, so
a dashboard can show (or join on) the version of every process behind a metric, and a mixed
rollout is visible at a glance. Served on the scheduler's ``/metrics`` and every processor's.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.version import __version__

#: Registries that already carry a :class:`BuildInfo` (a processor registers on each start).
_REGISTERED: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()


class BuildInfo(Collector):
    """The gauge ``frameflow_build_info`` (value 1) labelled with frameflow's version."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "frameflow_build_info", "Always 1; the frameflow version this process runs.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info


def register_build_info(registry: CollectorRegistry) -> None:
    """Add :class:`BuildInfo` to ``registry`` once (calling again is harmless)."""
    if registry not in _REGISTERED:
        registry.register(BuildInfo())
        _REGISTERED.add(registry)
