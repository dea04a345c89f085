"""Log lines about a frame say which frame, camera, processor and trace they are about.

While a worker thread processes a message, the :class:`~middleware.logs.LogContext`
middleware binds it here (one context variable, nothing else per message). The
:class:`FrameContextFilter` reads it when a record is emitted, in that thread or
in a coroutine it awaits, and adds ``frame_id``, ``camera_id``, ``processor_id``,
``message_id``, ``trace_id`` and ``span_id`` to the record (empty strings on
lines about nothing in particular).

:func:`install` puts the filter on the root logger's handlers and makes them
show the fields: ``FRAMEFLOW_LOG_FORMAT=json`` gives one JSON object per line;
otherwise the handler's own format is kept and ``frame_id=... camera_id=...
processor_id=... trace_id=...`` is appended to lines about a frame.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from pipeline.settings import Settings

from .frames import frame_of
from .telemetry import trace_id_of

#: The fields added to every record (empty when the record is about no message).
CONTEXT_FIELDS = ("frame_id", "camera_id", "processor_id", "message_id", "trace_id", "span_id")

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("frameflow_message", default=None)


#: Make a message (a Dramatiq message or proxy) what this context's log lines are about; returns the
#: token :data:`reset` takes. The context variable's own methods, no Python call around them: the
#: middleware binds and resets once per delivery.
bind: Callable[[Any], contextvars.Token] = _current.set
reset: Callable[[contextvars.Token], None] = _current.reset


@contextlib.contextmanager
def bound(message: Any) -> Iterator[None]:
    token = _current.set(message)
    try:
        yield
    finally:
        _current.reset(token)


def current_fields() -> dict[str, str]:
    """The context fields for a record emitted now (all empty outside a message)."""
    fields = dict.fromkeys(CONTEXT_FIELDS, "")
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        fields["trace_id"] = trace.format_trace_id(span_context.trace_id)
        fields["span_id"] = trace.format_span_id(span_context.span_id)
    message = _current.get()
    if message is None:
        return fields
    options = message.options
    fields["message_id"] = message.message_id
    fields["processor_id"] = str(options.get("processor") or "")
    frame = frame_of(message)
    if frame is not None:
        fields["frame_id"] = str(frame.get("frame_id") or message.message_id)
        fields["camera_id"] = str(frame.get("camera_id") or "")
    if not fields["trace_id"]:
        # Tracing is off here: the trace the producer started is still worth naming.
        carrier = frame.get("trace_context") if frame is not None else options.get("trace_context")
        fields["trace_id"] = trace_id_of(carrier) or ""
    return fields


class FrameContextFilter(logging.Filter):
    """Adds :data:`CONTEXT_FIELDS` to every record it sees; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "frame_id"):
            record.__dict__.update(current_fields())
        return True


class ContextFormatter(logging.Formatter):
    """Keeps another formatter's text and appends the context of lines about a message."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter(logging.BASIC_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        if not getattr(record, "message_id", "") and not getattr(record, "trace_id", ""):
            return text
        context = " ".join(
            f"{name}={getattr(record, name)}"
            for name in ("frame_id", "camera_id", "processor_id", "trace_id")
            if getattr(record, name, "")
        )
        if not context:
            return text
        first, newline, rest = text.partition("\n")  # keep a traceback below the line it belongs to
        return f"{first} [{context}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, process, thread, the context, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, "")
            if value:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


def install(settings: Settings | None = None) -> None:
    """Show the context on the root logger's handlers (idempotent).

    With ``FRAMEFLOW_LOG_FORMAT`` set and no handler configured yet, a stderr
    handler at ``FRAMEFLOW_LOG_LEVEL`` is added first; without it, frameflow
    leaves the choice of handlers to the application.
    """
    settings = settings or Settings.from_env()
    root = logging.getLogger()
    if not root.handlers and settings.log_format:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(settings.log_level)
    for handler in root.handlers:
        if not any(isinstance(existing, FrameContextFilter) for existing in handler.filters):
            handler.addFilter(FrameContextFilter())
        if settings.log_format == "json":
            if not isinstance(handler.formatter, JsonFormatter):
                handler.setFormatter(JsonFormatter())
        elif not isinstance(handler.formatter, ContextFormatter | JsonFormatter):
            handler.setFormatter(ContextFormatter(handler.formatter))
