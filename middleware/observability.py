"""The observability stack of a broker: log context, tracing and metrics, in the right place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .logs import LogContext
from .metrics import Metrics
from .tracing import Tracing

if TYPE_CHECKING:
    import dramatiq


def add_observability(broker: dramatiq.Broker, *, metrics: bool = True) -> dramatiq.Broker:
    """Put :class:`LogContext`, :class:`Tracing` and (with ``metrics``) :class:`Metrics` at the
    front of ``broker``'s middleware, each unless it is there already.

    At the front, their ``before_*`` hooks run first (a message skipped by a later
    middleware is still traced and counted) and their ``after_*`` hooks last (they
    see what Retries decided, and a retry is sent from inside the delivery's span).
    """
    wanted: list[type] = [LogContext, Tracing, *([Metrics] if metrics else [])]
    missing = [kind for kind in wanted if not any(isinstance(existing, kind) for existing in broker.middleware)]
    for kind in reversed(missing):
        middleware = kind()
        if broker.middleware:
            broker.add_middleware(middleware, before=type(broker.middleware[0]))
        else:
            broker.add_middleware(middleware)
    return broker
