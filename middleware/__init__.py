"""Dramatiq middleware that turns the broker into frameflow's orchestrator."""

from .freshness import FrameFreshness
from .routing import CapabilityRouter, RoutingDecision

__all__ = ["CapabilityRouter", "FrameFreshness", "RoutingDecision"]
