"""Dramatiq middleware that turns the broker into frameflow's orchestrator, and observes it."""

import pipeline  # noqa: F401 - first: pipeline's high-level modules import middleware submodules

from .freshness import FrameFreshness
from .logs import LogContext
from .metrics import Metrics
from .observability import add_observability
from .routing import CapabilityRouter, RoutingDecision
from .tracing import Tracing

__all__ = [
    "CapabilityRouter",
    "FrameFreshness",
    "LogContext",
    "Metrics",
    "RoutingDecision",
    "Tracing",
    "add_observability",
]
