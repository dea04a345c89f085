"""Dramatiq middleware that turns the broker into frameflow's orchestrator, and observes it.

One middleware, one file: routing (the orchestrator) and parking, freshness, the circuit
breaker, the processor-queue guard, tracing, metrics and log context. They import the
broker core and the frame domain below them, never the processes above
(``pipeline.processes`` assembles them into brokers).
"""

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
