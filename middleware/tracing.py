"""One OpenTelemetry trace per frame, following the messaging semantic conventions.

* **send**: every enqueue gets a PRODUCER span ``send <queue>``, a child of the
  sender's current span, else of the context the message already carries (a
  camera's ``trace_context``, or the trace of a retried message), else a new
  root. Its context is injected with the configured propagators (W3C
  ``traceparent``/``tracestate`` by default): into a frame's ``trace_context``
  field (JSON), the seed's place for it, and into the ``trace_context`` option
  of any other message. A routed frame's span carries the routing decision:
  ``frameflow.routing.targets``, ``frameflow.routing.parked`` (with a
  ``frame parked`` event and its reason per capability) and
  ``frameflow.routing.dropped`` (with a ``frame dropped`` event); a write Redis
  refused adds a ``frame refused`` event and sets the status to ERROR.
* **process**: every delivery gets a CONSUMER span ``process <queue>``, a child
  of the context the message carries, current while the actor runs (so spans
  the actor starts, and a retry it causes, belong to the same trace). An
  exception is recorded and sets the status to ERROR; ``frameflow.outcome`` says
  what became of the delivery (``processed``, ``retried``, ``dead_lettered``,
  ``failed``, ``skipped``).

Tracing is configured from the ``OTEL_*`` environment (:mod:`pipeline.domain.telemetry`).
Without it the API's proxy provider is in place; the middleware sees that once,
at the first message, and from then on each hook returns at once: on a
:class:`~pipeline.streams.broker.RedisStreamsBroker` its hooks are then not even
called (``idle_hooks``, :mod:`pipeline.streams.hooks`).

Put it at the front of the middleware list (:func:`middleware.add_observability`
does): its ``after_*`` hooks then run after Retries', so a retry is sent from
inside the failed delivery's span.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from dramatiq.middleware import Middleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from pipeline.domain import telemetry
from pipeline.domain.frames import frame_of
from pipeline.streams.keys import CONSUMER_GROUP

from .routing import parked_reason

if TYPE_CHECKING:
    import dramatiq

#: The message option (other messages) and frame field (frames) the context travels in.
TRACE_CONTEXT = "trace_context"

#: Sends started and not finished that one thread keeps (enqueues that raised leave theirs behind).
MAX_OPEN_SENDS = 64

_UNRESOLVED: Any = object()

#: Every hook of :class:`Tracing`: each does nothing once it knows there is no tracer.
_HOOKS = frozenset(
    {
        "before_enqueue",
        "after_enqueue",
        "before_process_message",
        "after_process_message",
        "after_skip_message",
        "after_worker_shutdown",
    }
)


class Tracing(Middleware):
    """PRODUCER spans per send and CONSUMER spans per delivery; see the module docstring.

    Parameters:
      tracer_provider: the provider to use instead of the global one (tests, or an
        application that keeps its own).
      configure: configure the global SDK from ``OTEL_*`` when the middleware is made.
    """

    def __init__(self, *, tracer_provider: trace.TracerProvider | None = None, configure: bool = True) -> None:
        if configure and tracer_provider is None:
            telemetry.configure_tracing()
        self._provider = tracer_provider
        self._tracer: Any = _UNRESOLVED
        self._propagate: Any = None
        self._local = threading.local()
        #: The hooks a broker need not call (:mod:`pipeline.streams.hooks`): all of them without a tracer.
        self.idle_hooks: frozenset[str] = frozenset()

    def _get_tracer(self, broker: dramatiq.Broker | None = None) -> trace.Tracer | None:
        tracer = self._tracer
        if tracer is _UNRESOLVED:
            provider = self._provider or trace.get_tracer_provider()
            if telemetry.is_recording_provider(provider):
                from opentelemetry import propagate  # loads the configured propagators: only when tracing

                from pipeline.version import __version__

                self._propagate = propagate
                tracer = provider.get_tracer("frameflow", __version__)
            else:
                tracer = None
            self._tracer = tracer
            if tracer is None:
                self.idle_hooks = _HOOKS
                refresh = getattr(broker, "refresh_hooks", None)
                if refresh is not None:
                    refresh()
        return tracer

    # -- send ----------------------------------------------------------------------------------
    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int | None) -> None:
        tracer = self._get_tracer(broker)
        if tracer is None:
            return
        parent = None
        if not trace.get_current_span().get_span_context().is_valid:
            carrier = _carrier_of(message)
            parent = self._propagate.extract(carrier) if carrier else otel_context.Context()
        attributes = _message_attributes(broker, message, "send")
        if delay:
            attributes["messaging.dramatiq.delay_ms"] = int(delay)
        span = tracer.start_span(
            f"send {message.queue_name}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        )
        carrier = {}
        self._propagate.inject(carrier, context=trace.set_span_in_context(span))
        frame = frame_of(message)
        if frame is not None:
            frame[TRACE_CONTEXT] = json.dumps(carrier, separators=(",", ":"))
        else:
            message.options[TRACE_CONTEXT] = carrier
        sends = self._sends()
        if len(sends) >= MAX_OPEN_SENDS:
            _end_unfinished(sends.pop(0)[1])
        sends.append((message.message_id, span))

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int | None) -> None:
        if self._tracer is None or self._tracer is _UNRESOLVED:
            return
        sends = self._sends()
        while sends:
            message_id, span = sends.pop()
            if message_id == message.message_id:
                _record_routing(span, message.options)
                span.end()
                return
            _end_unfinished(span)

    def _sends(self) -> list[tuple[str, trace.Span]]:
        sends = getattr(self._local, "sends", None)
        if sends is None:
            sends = self._local.sends = []
        return sends

    # -- process -------------------------------------------------------------------------------
    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        tracer = self._get_tracer(broker)
        if tracer is None:
            return
        carrier = _carrier_of(message)
        parent = self._propagate.extract(carrier) if carrier else otel_context.Context()
        attributes = _message_attributes(broker, message, "process")
        attributes["messaging.consumer.group.name"] = getattr(broker, "group", CONSUMER_GROUP)
        attributes["messaging.dramatiq.retries"] = int(message.options.get("retries") or 0)
        span = tracer.start_span(
            f"process {message.queue_name}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        self._local.processing = (span, token, message.options.get("retries") or 0)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        processing = self._finish_processing()
        if processing is None:
            return
        span, retries_before = processing
        if exception is None:
            outcome = "processed"
        else:
            span.record_exception(exception)
            span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"))
            span.set_attribute("error.type", f"{type(exception).__module__}.{type(exception).__qualname__}")
            if message.failed:
                outcome = "dead_lettered"
            elif int(message.options.get("retries") or 0) > retries_before:
                outcome = "retried"
            else:
                outcome = "failed"
        span.set_attribute("frameflow.outcome", outcome)
        span.end()

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        processing = self._finish_processing()
        if processing is not None:
            span, _ = processing
            span.set_attribute("frameflow.outcome", "dead_lettered" if message.failed else "skipped")
            span.end()

    def _finish_processing(self) -> tuple[trace.Span, int] | None:
        if self._tracer is None:  # not tracing (known since the first message): no span was started
            return None
        processing = getattr(self._local, "processing", None)
        if processing is None:
            return None
        self._local.processing = None
        span, token, retries_before = processing
        otel_context.detach(token)
        return span, retries_before

    # -- lifecycle -----------------------------------------------------------------------------
    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._tracer not in (None, _UNRESOLVED):
            telemetry.flush(self._provider)  # Dramatiq's worker processes leave without the SDK's atexit flush


def _carrier_of(message: Any) -> dict | None:
    frame = frame_of(message)
    if frame is not None:
        raw = frame.get(TRACE_CONTEXT)
        if not raw or "traceparent" not in raw:
            return None
        try:
            carrier = json.loads(raw)
        except ValueError:
            return None
    else:
        carrier = message.options.get(TRACE_CONTEXT)
    return carrier if isinstance(carrier, dict) and carrier else None


def _messaging_system(broker: Any) -> str:
    name = type(broker).__name__.lower()
    for system in ("redis", "rabbitmq"):
        if system in name:
            return system
    return "dramatiq"


def _message_attributes(broker: Any, message: Any, operation: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": _messaging_system(broker),
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": message.queue_name,
        "messaging.message.id": message.message_id,
        "messaging.dramatiq.actor": message.actor_name,
    }
    processor = message.options.get("processor")
    if processor:
        attributes["frameflow.processor.id"] = str(processor)
    frame = frame_of(message)
    if frame is not None:
        attributes["frameflow.frame.id"] = str(frame.get("frame_id") or message.message_id)
        attributes["frameflow.camera.id"] = str(frame.get("camera_id") or "")
    return attributes


def _record_routing(span: trace.Span, options: dict[str, Any]) -> None:
    """The routing decision (``broker.enqueue`` of a routed frame puts it in the returned options)."""
    if "routed_to" not in options:
        return
    span.set_attribute("frameflow.routing.targets", [str(target) for target in options["routed_to"]])
    parked = [str(capability) for capability in options.get("parked") or ()]
    span.set_attribute("frameflow.routing.parked", parked)
    for capability in parked:
        span.add_event(
            "frame parked",
            {"frameflow.capability": capability, "frameflow.reason": parked_reason(capability)},
        )
    dropped = int(options.get("dropped") or 0)
    span.set_attribute("frameflow.routing.dropped", dropped)
    if dropped:
        span.add_event("frame dropped", {"frameflow.reason": "bound", "frameflow.count": dropped})
    refused = options.get("refused")
    if refused:  # Redis refused a write of this frame (middleware/decisions.py)
        span.add_event("frame refused", {"frameflow.reason": str(refused)})
        span.set_status(Status(StatusCode.ERROR, f"Redis refused a write: {refused}"))


def _end_unfinished(span: trace.Span) -> None:
    span.set_status(Status(StatusCode.ERROR, "the enqueue did not complete"))
    span.end()
