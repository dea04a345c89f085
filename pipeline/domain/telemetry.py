"""OpenTelemetry set-up from the standard ``OTEL_*`` variables, and nothing else.

:func:`configure_tracing` installs an SDK tracer provider only when the
environment asks for traces:

* ``OTEL_TRACES_EXPORTER`` names one or more exporters (``console``, ``otlp``,
  ``otlp_proto_http``, ``otlp_proto_grpc``, ``jsonfile``...), loaded by name from
  the ``opentelemetry_traces_exporter`` entry-point group as the SDK's own
  auto-configuration does; ``none`` turns tracing off;
* without it, an ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``)
  means ``otlp``, the specification's default exporter.

``otlp`` is OTLP over HTTP/protobuf (the ``otlp`` extra: ``pip install
'frameflow[otlp]'``) unless ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` says
``grpc``. ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_BSP_*`` and the exporters' own variables
are read by the SDK itself. ``OTEL_SDK_DISABLED=true`` turns everything off.

With none of that set nothing is created, nothing is printed, and the SDK is
not even imported: the API's no-op provider stays, and the tracing middleware
sees it and does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace

from pipeline.settings import Settings

logger = logging.getLogger(__name__)

#: The entry-point group exporters are looked up in (the SDK's own).
EXPORTER_GROUP = "opentelemetry_traces_exporter"

#: ``service.name`` when neither ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` names one.
DEFAULT_SERVICE_NAME = "frameflow"

_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_configure_lock = threading.Lock()
_configured = False


def tracing_enabled() -> bool:
    """Whether a real tracer provider is installed (not the API's proxy or no-op one)."""
    return is_recording_provider(trace.get_tracer_provider())


def is_recording_provider(provider: Any) -> bool:
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def exporter_names(env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """The trace exporters the environment asks for, as ``(name asked for, entry-point name)``
    pairs; empty: no tracing."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not raw:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        raw = "otlp" if endpoint else ""
    names = [name.strip() for name in raw.split(",") if name.strip() and name.strip().lower() != "none"]
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "").strip()
    resolved = []
    for name in names:
        entry_point = name
        if name == "otlp":
            entry_point = _OTLP_BY_PROTOCOL.get(protocol or "http/protobuf", "")
            if not entry_point:
                logger.error("Tracing is off: OTLP protocol %r is not supported (http/protobuf or grpc).", protocol)
                return []
        resolved.append((name, entry_point))
    return resolved


def load_exporter(name: str, entry_point: str | None = None) -> type:
    """The exporter class registered as ``entry_point`` (default: ``name``);
    :class:`LookupError` with a one-line hint when it is not installed."""
    from importlib.metadata import entry_points

    found = list(entry_points(group=EXPORTER_GROUP, name=entry_point or name))
    if not found:
        hint = ": pip install 'frameflow[otlp]'" if name.startswith("otlp") else ""
        raise LookupError(f"OTEL_TRACES_EXPORTER={name} names an exporter that is not installed{hint}")
    return found[0].load()


def configure_tracing(env: Mapping[str, str] | None = None) -> bool:
    """Install an SDK tracer provider with the exporters the ``OTEL_*`` environment names.

    Idempotent and cheap when there is nothing to do. Leaves a provider the
    application installed itself alone. An exporter that is asked for but not
    installed is reported as one ERROR line and tracing stays off: observability
    never stops frames from flowing. Returns whether tracing is on.
    """
    global _configured
    with _configure_lock:
        if _configured or tracing_enabled():
            return tracing_enabled()
        _configured = True
        names = exporter_names(env)
        if not names:
            return False
        exporters = []
        for name, entry_point in names:
            try:
                exporters.append(load_exporter(name, entry_point)())
            except LookupError as error:
                logger.error("Tracing is off: %s", error)
                return False
            except Exception as error:
                logger.error("Tracing is off: exporter %r failed to start: %s", name, error)
                return False
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        provider = TracerProvider(resource=resource)
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        return True


def flush(provider: Any = None, timeout_ms: int = 5000) -> None:
    """Export what ``provider`` (default: the global one) still buffers: a forked worker
    process leaves through ``os._exit``, which skips the SDK's own flush at exit."""
    provider = provider or trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None and is_recording_provider(provider):
        force_flush(timeout_ms)


def current_trace_context() -> str | None:
    """The current span's context as the seed's ``trace_context`` JSON, or ``None`` without a span."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier, separators=(",", ":"))


def trace_id_of(carrier: Any) -> str | None:
    """The trace id (32 hex digits) in a W3C ``traceparent``, from a carrier dict or its JSON."""
    if isinstance(carrier, str):
        if "traceparent" not in carrier:
            return None
        try:
            carrier = json.loads(carrier)
        except ValueError:
            return None
    if not isinstance(carrier, dict):
        return None
    parts = str(carrier.get("traceparent", "")).split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    return parts[1]


class JsonLinesSpanExporter:
    """Writes each finished span as one JSON object per line to ``FRAMEFLOW_TRACE_FILE``.

    Registered as the ``jsonfile`` trace exporter, so ``OTEL_TRACES_EXPORTER=jsonfile``
    selects it. Meant for tests and debugging: several processes may append to one file
    (each line is one ``write`` of an ``O_APPEND`` file).
    """

    def __init__(self, path: str | None = None) -> None:
        path = path or Settings.from_env().trace_file
        if not path:
            raise LookupError("the jsonfile exporter needs FRAMEFLOW_TRACE_FILE (the file to append spans to)")
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = "".join(json.dumps(span_record(span), separators=(",", ":"), default=str) + "\n" for span in spans)
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def span_record(span: Any) -> dict[str, Any]:
    """A finished SDK span as a flat, JSON-ready dict (ids in hex, as in W3C headers)."""
    context = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
        "parent_span_id": trace.format_span_id(parent.span_id) if parent is not None else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "status_description": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": event.name, "attributes": dict(event.attributes or {})} for event in span.events],
        "links": [
            {
                "trace_id": trace.format_trace_id(link.context.trace_id),
                "span_id": trace.format_span_id(link.context.span_id),
            }
            for link in span.links
        ],
        "service": (span.resource.attributes or {}).get("service.name"),
    }
