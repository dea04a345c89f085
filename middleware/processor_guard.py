"""A processor's actor is a leaf: a message on its queue may not make Dramatiq send others.

Dramatiq's middleware sends messages on a message's behalf when its options say so:
Callbacks' ``on_success`` and ``on_failure`` and Retries' ``on_retry_exhausted`` name an
actor to tell, Pipelines' ``pipe_target`` carries the next message of a pipeline (and
``pipe_ignore`` how to call it). No router ever sets them on a frame, but anything that
can write to Redis can write them into a processor queue, and then a frame that failed
would send a message to any actor the worker declares, in the processor's name.

:class:`ProcessorGuard` refuses such a message in ``before_process_message``, the way
Dramatiq's AgeLimit refuses an old one: it fails the message and raises a ``SkipMessage``
(:class:`~pipeline.errors.ForbiddenOption`). Dramatiq's worker then runs neither the actor
nor any ``after_process_message`` hook, where Callbacks, Pipelines and Retries act: nothing
is sent and nothing retried. The broker dead-letters the failed message with the reason
(``ForbiddenOption: option 'on_failure' is not allowed on a processor queue``), its envelope
as it came, and the processor counts it as ``rejected``.

A broker that serves nothing but guarded queues (the one ``ProcessorClient.start()`` makes for
itself) need not carry Dramatiq's Callbacks and Pipelines at all: every message they could act
on is refused before its actor runs, so for each frame they would only cost their
``after_process_message`` hooks (Pipelines' imports a module on every call).
:func:`leaf_middleware` is Dramatiq's default middleware without them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from dramatiq.middleware import Callbacks, Middleware, Pipelines, default_middleware

from pipeline.errors import ForbiddenOption, FrameRefused

from .logs import LogContext
from .metrics import Metrics
from .tracing import Tracing

if TYPE_CHECKING:
    import dramatiq

logger = logging.getLogger(__name__)

#: The options with which a message makes Dramatiq's middleware send another message.
SENDING_OPTIONS = ("on_success", "on_failure", "on_retry_exhausted", "pipe_target", "pipe_ignore")

#: Middleware that only observe a delivery: the guard goes after them, so that they see the refusal.
_OBSERVERS = (LogContext, Tracing, Metrics)

OnRefused = Callable[[FrameRefused], None]


class ProcessorGuard(Middleware):
    """Refuses messages of processor queues that carry any of :data:`SENDING_OPTIONS`.

    Add it with :func:`guard_processor_queue`, which puts it where its hook runs first.
    """

    def __init__(self) -> None:
        self._guarded: dict[str, OnRefused | None] = {}
        self._lock = threading.Lock()

    def guard(self, queue_name: str, on_refused: OnRefused | None = None) -> None:
        """Guard ``queue_name``; ``on_refused`` is told of each refusal (a processor's count)."""
        with self._lock:
            self._guarded = {**self._guarded, queue_name: on_refused}

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        guarded = self._guarded
        if message.queue_name not in guarded:
            return
        options = message.options
        if options.keys().isdisjoint(SENDING_OPTIONS):  # every frame a router wrote: one set operation
            return
        found = [name for name in SENDING_OPTIONS if name in options]
        refusal = ForbiddenOption(_reason(found))
        logger.warning("Refusing message %s on %s: %s.", message.message_id, message.queue_name, refusal)
        on_refused = guarded[message.queue_name]
        if on_refused is not None:
            on_refused(refusal)
        message.fail()  # dead-lettered, not acked
        raise refusal


def leaf_middleware() -> list[Middleware]:
    """Dramatiq's default middleware less Callbacks and Pipelines, for a broker whose every queue is
    guarded: they act only on :data:`SENDING_OPTIONS`, which the guard refuses first (Retries stays:
    a failed frame is retried, and its ``on_retry_exhausted`` is refused like the others)."""
    return [kind() for kind in default_middleware if kind not in (Callbacks, Pipelines)]


def guard_processor_queue(
    broker: dramatiq.Broker, queue_name: str, on_refused: OnRefused | None = None
) -> ProcessorGuard:
    """Guard ``queue_name`` with the broker's :class:`ProcessorGuard`, added if it has none:
    right after the observing middleware at the front of the stack (log context, tracing,
    metrics: they see a refused message too), before every other, so that no other
    ``before_process_message`` hook acts on a message it refuses."""
    guard = next((item for item in broker.middleware if isinstance(item, ProcessorGuard)), None)
    if guard is None:
        guard = ProcessorGuard()
        position = 0
        while position < len(broker.middleware) and isinstance(broker.middleware[position], _OBSERVERS):
            position += 1
        if position < len(broker.middleware):
            broker.add_middleware(guard, before=type(broker.middleware[position]))
        else:
            broker.add_middleware(guard)
    guard.guard(queue_name, on_refused)
    return guard


def _reason(names: list[str]) -> str:
    if len(names) == 1:
        return f"option {names[0]!r} is not allowed on a processor queue"
    return f"options {', '.join(repr(name) for name in names)} are not allowed on a processor queue"
