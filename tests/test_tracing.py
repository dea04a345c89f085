"""Tracing: one OpenTelemetry trace per frame, across real processes, verified from exported spans.

The processes (``tests/observed.py``) are configured only by ``OTEL_*`` variables, as
in production; ``OTEL_TRACES_EXPORTER=jsonfile`` is frameflow's JSON-lines exporter,
one file per process. Nothing sleeps to synchronise: spans and results are polled
for with a deadline.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import dramatiq
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from middleware.freshness import FrameFreshness
from middleware.routing import CapabilityRouter
from middleware.tracing import Tracing
from pipeline import RedisStreamsBroker

from .observability import Processes, observed, observed_env, read_spans, run, spans_where, traced_env, traceparent
from .processor_harness import queue_entries, register_fake


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    group = Processes(tmp_path)
    yield group
    group.stop_all()


@pytest.mark.slow
def test_a_frame_is_one_trace_from_producer_to_worker_to_result_reader(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, processes
) -> None:
    files = {name: tmp_path / f"{name}.jsonl" for name in ("producer", "worker", "reader")}
    processes.processor(redis_client, traced_env(redis_url, files["worker"], "worker"), "traced-1")

    published = run(
        observed("publish", json.dumps([{"capability": "traced", "camera_id": "porch"}])),
        traced_env(redis_url, files["producer"], "camera"),
    )
    frame = json.loads(published.stdout)
    assert frame["targets"] == ["traced-1"]
    read = run(observed("read-results", "1"), traced_env(redis_url, files["reader"], "ha-bridge"))
    result = json.loads(read.stdout)

    # The producer: its capture span, and the send span inside it, with the routing decision.
    (send,) = [span for span in read_spans(files["producer"]) if span["kind"] == "PRODUCER"]
    (capture,) = [span for span in read_spans(files["producer"]) if span["name"] == "capture"]
    assert send["name"] == "send frames"
    assert send["parent_span_id"] == capture["span_id"]
    assert send["service"] == "camera"
    assert send["attributes"]["messaging.operation.type"] == "send"
    assert send["attributes"]["messaging.destination.name"] == "frames"
    assert send["attributes"]["messaging.message.id"] == frame["frame_id"]
    assert send["attributes"]["frameflow.frame.id"] == frame["frame_id"]
    assert send["attributes"]["frameflow.camera.id"] == "porch"
    assert send["attributes"]["frameflow.routing.targets"] == ["traced-1"]
    assert send["attributes"]["frameflow.routing.parked"] == []

    # The worker: a consumer span, child of the send span, in the same trace.
    (process,) = spans_where(files["worker"], lambda span: span["kind"] == "CONSUMER", 1, "processing")
    assert process["name"] == "process frames.ready.traced-1"
    assert process["trace_id"] == send["trace_id"]
    assert process["parent_span_id"] == send["span_id"]
    assert process["service"] == "worker"
    assert process["status"] == "UNSET"
    assert process["attributes"] == {
        "messaging.system": "redis",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "frames.ready.traced-1",
        "messaging.message.id": frame["frame_id"],
        "messaging.consumer.group.name": "workers",
        "messaging.dramatiq.actor": "process_frame.traced-1",
        "messaging.dramatiq.retries": 0,
        "frameflow.processor.id": "traced-1",
        "frameflow.frame.id": frame["frame_id"],
        "frameflow.camera.id": "porch",
        "frameflow.outcome": "processed",
    }

    # The result carries the processing span's context, and the reader continued the trace from it.
    assert result["frame_id"] == frame["frame_id"]
    assert traceparent(result["trace_context"]) == (send["trace_id"], process["span_id"])
    (handled,) = read_spans(files["reader"])
    assert handled["name"] == "handle observed:results"
    assert (handled["trace_id"], handled["parent_span_id"]) == (send["trace_id"], process["span_id"])


@pytest.mark.slow
def test_a_failing_frame_shows_each_retry_and_the_final_error_in_its_trace(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, processes
) -> None:
    producer_file, worker_file = tmp_path / "producer.jsonl", tmp_path / "worker.jsonl"
    processes.processor(redis_client, traced_env(redis_url, worker_file, "worker"), "flaky-1", "--max-retries", "2")
    published = run(
        observed("publish", json.dumps([{"capability": "traced", "fail": True}])),
        traced_env(redis_url, producer_file, "camera"),
    )
    frame_id = json.loads(published.stdout)["frame_id"]
    (send,) = [span for span in read_spans(producer_file) if span["kind"] == "PRODUCER"]

    attempts = spans_where(worker_file, lambda span: span["kind"] == "CONSUMER", 3, "three attempts")
    attempts.sort(key=lambda span: span["attributes"]["messaging.dramatiq.retries"])
    retries = {span["span_id"]: span for span in read_spans(worker_file) if span["kind"] == "PRODUCER"}
    assert [span["attributes"]["messaging.dramatiq.retries"] for span in attempts] == [0, 1, 2]
    assert [span["attributes"]["frameflow.outcome"] for span in attempts] == ["retried", "retried", "dead_lettered"]
    for span in attempts:
        assert span["trace_id"] == send["trace_id"]
        assert span["attributes"]["frameflow.frame.id"] == frame_id
        assert span["status"] == "ERROR"
        assert span["status_description"] == "RuntimeError: the frame asked to fail"
        assert span["attributes"]["error.type"] == "builtins.RuntimeError"
        (event,) = span["events"]
        assert event["name"] == "exception"
        assert event["attributes"]["exception.type"] == "RuntimeError"
        assert "the frame asked to fail" in event["attributes"]["exception.stacktrace"]

    # Each retry is sent from inside the attempt that failed, and the next attempt follows that send.
    assert attempts[0]["parent_span_id"] == send["span_id"]
    for failed, following in itertools.pairwise(attempts):
        retry = retries[following["parent_span_id"]]
        assert retry["name"] == "send frames.ready.flaky-1"
        assert retry["parent_span_id"] == failed["span_id"]
        assert retry["trace_id"] == send["trace_id"]
        assert retry["attributes"]["messaging.dramatiq.delay_ms"] > 0
    assert len(retries) == 2


def test_plain_dramatiq_actors_are_traced_and_their_context_travels_in_options(broker: RedisStreamsBroker) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    broker.add_middleware(Tracing(tracer_provider=provider), before=type(broker.middleware[0]))
    tracer = provider.get_tracer("test")

    @dramatiq.actor(max_retries=0)
    def greet(name: str) -> None:
        with tracer.start_as_current_span("inside the actor"):
            if name == "nobody":
                raise ValueError("nobody to greet")

    sent = greet.send("world")
    failed = greet.send("nobody")
    assert "traceparent" in sent.options["trace_context"]
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        broker.join(greet.queue_name, fail_fast=False)
        worker.join()
    finally:
        worker.stop()

    spans = exporter.get_finished_spans()
    by_message = {
        message.message_id: {
            span.kind: span for span in spans if span.attributes.get("messaging.message.id") == message.message_id
        }
        for message in (sent, failed)
    }
    for message_id, kinds in by_message.items():
        send, process = kinds[SpanKind.PRODUCER], kinds[SpanKind.CONSUMER]
        assert send.name == process.name.replace("process", "send") == "send default"
        assert process.parent.span_id == send.context.span_id
        assert process.context.trace_id == send.context.trace_id
        (inner,) = [
            span for span in spans if span.name == "inside the actor" and span.parent.span_id == process.context.span_id
        ]
        assert inner.context.trace_id == send.context.trace_id
        assert process.attributes["messaging.message.id"] == message_id
    assert by_message[sent.message_id][SpanKind.CONSUMER].status.status_code == StatusCode.UNSET
    failure = by_message[failed.message_id][SpanKind.CONSUMER]
    assert failure.status.status_code == StatusCode.ERROR
    assert failure.attributes["frameflow.outcome"] == "dead_lettered"
    assert failure.events[0].name == "exception"


def test_the_send_span_of_a_routed_frame_carries_the_routing_decision(redis_url: str, redis_client) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    register_fake(redis_client, "face-1", ("face_detection",))
    broker = RedisStreamsBroker(redis_url, middleware=[Tracing(tracer_provider=provider), CapabilityRouter()])

    @dramatiq.actor(broker=broker, capabilities=["face_detection", "gesture_detection"])
    def analyse(frame: dict) -> None: ...

    sent = analyse.send({"frame_id": "f-9", "camera_id": "porch", "image_data": "aW1n"})
    broker.close()
    assert sent.options["routed_to"] == ["face-1"]
    (send,) = exporter.get_finished_spans()
    assert (send.name, send.kind) == ("send default", SpanKind.PRODUCER)
    assert send.attributes["frameflow.routing.targets"] == ("face-1",)
    assert send.attributes["frameflow.routing.parked"] == ("gesture_detection",)
    assert send.attributes["frameflow.routing.dropped"] == 0
    (parked,) = send.events
    assert parked.name == "frame parked"
    assert parked.attributes["frameflow.reason"] == "no live processor for capability 'gesture_detection'"
    # The context went into the frame itself: both the routed copy and the parked one carry it.
    (entry,) = queue_entries(redis_client, "face-1")
    assert traceparent(entry[b"trace_context"].decode())[1] == format(send.context.span_id, "016x")


def test_the_send_span_of_a_frame_redis_refused_says_so(redis_url: str, redis_client) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    register_fake(redis_client, "face-1", ("face_detection",))
    redis_client.set("frames:ready:face-1", "not a stream")  # the copy's write answers WRONGTYPE
    broker = RedisStreamsBroker(redis_url, middleware=[Tracing(tracer_provider=provider), CapabilityRouter()])

    @dramatiq.actor(broker=broker, capabilities=["face_detection"])
    def analyse(frame: dict) -> None: ...

    # What publish_many does: the frames of a chunk through the broker's one entrance, outcomes back.
    message = analyse.message({"frame_id": "f-1", "camera_id": "porch", "image_data": "aW1n"})
    (decision,) = broker.dispatch([broker.dispatcher.claim(broker, message)])
    broker.close()
    assert decision.targets == () and "WRONGTYPE" in str(decision.refused)
    (send,) = exporter.get_finished_spans()
    assert send.status.status_code == StatusCode.ERROR
    assert [event.name for event in send.events] == ["frame refused"]
    assert "WRONGTYPE" in send.events[0].attributes["frameflow.reason"]


def test_a_stale_frame_is_traced_as_dropped_and_never_processed(broker: RedisStreamsBroker) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    broker.add_middleware(FrameFreshness())
    broker.add_middleware(Tracing(tracer_provider=provider), before=type(broker.middleware[0]))
    ran: list[dict] = []

    @dramatiq.actor
    def analyse(frame: dict) -> None:
        ran.append(frame)

    old = int(time.time() * 1000) - 60_000
    analyse.send_with_options(
        args=({"frame_id": "f-1", "camera_id": "porch"},), frame=True, captured_at_ms=old, max_age_ms=1000
    )
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        broker.join(analyse.queue_name)
        worker.join()
    finally:
        worker.stop()
    assert ran == []
    (process,) = [span for span in exporter.get_finished_spans() if span.kind == SpanKind.CONSUMER]
    assert process.attributes["frameflow.outcome"] == "skipped"
    assert process.attributes["frameflow.frame.id"] == "f-1"
    (event,) = process.events
    assert (event.name, event.attributes["frameflow.reason"]) == ("frame dropped", "stale")


def test_without_otel_configuration_nothing_is_created_and_nothing_is_printed(redis_url: str, redis_client) -> None:
    done = run(observed("roundtrip"), observed_env(redis_url))
    assert done.stderr == ""
    seen = json.loads(done.stdout)
    assert seen["results"] == 1 and seen["targets"] == ["solo-1"]
    assert seen["provider"] == "ProxyTracerProvider"
    assert seen["sdk_tracing_imported"] is False  # no exporter, no provider, not even their modules
    assert seen["trace_context"] == "{}"  # the frame's own (empty) context, passed through


@pytest.mark.skipif(
    bool(list(entry_points(group="opentelemetry_traces_exporter", name="otlp_proto_http"))),
    reason="the otlp extra is installed here",
)
def test_an_exporter_asked_for_and_not_installed_is_one_line_and_frames_still_flow(
    redis_url: str, redis_client
) -> None:
    done = run(observed("roundtrip"), observed_env(redis_url, OTEL_TRACES_EXPORTER="otlp"))
    assert done.stderr.splitlines() == [
        "Tracing is off: OTEL_TRACES_EXPORTER=otlp names an exporter that is not installed: "
        "pip install 'frameflow[otlp]'"
    ]
    seen = json.loads(done.stdout)
    assert seen["results"] == 1 and seen["provider"] == "ProxyTracerProvider"


@pytest.mark.parametrize("recording", [False, True])
def test_without_a_tracer_the_broker_stops_calling_the_tracing_hooks(
    recording: bool, broker: RedisStreamsBroker
) -> None:
    """Without a tracer every Tracing hook does nothing: after the first message the broker leaves
    them out of its hook table (no call per message); with one, they stay."""
    from opentelemetry import trace

    provider = TracerProvider() if recording else trace.NoOpTracerProvider()
    tracing = Tracing(tracer_provider=provider)
    broker.add_middleware(tracing)

    @dramatiq.actor(broker=broker, queue_name="idle-hooks")
    def noop() -> None:
        pass

    def tracing_hooks(name: str) -> list:
        return [hook for hook in broker._hook_table().hooks(name, broker.middleware) if hook.__self__ is tracing]

    assert tracing_hooks("before_process_message")  # not known yet: called for the first message
    noop.send()
    for name in ("before_enqueue", "after_enqueue", "before_process_message", "after_process_message"):
        assert bool(tracing_hooks(name)) is recording
