"""The processes of the observability tests: ``python -m tests.observed COMMAND ...``.

* ``processor ID CAPABILITY [--max-retries N]``: a ProcessorClient the seed's way,
  serving ``/health`` and ``/metrics`` on a free port (its registry entry names it).
  A frame whose metadata says ``{"fail": true}`` raises; every frame is logged.
* ``publish SPEC_JSON``: publishes frames (a list of ``{"capability", "camera_id",
  "fail", "age_s"}``) through a FrameProducer, inside a span of its own, and prints
  one JSON line per frame: ``{"frame_id", "targets"}``.
* ``read-results COUNT``: reads COUNT results from ``observed:results`` and, for each,
  continues its trace with a CONSUMER span ``handle observed:results``; prints the
  results as JSON lines.
* ``roundtrip``: producer and processor in this one process, one frame through;
  prints what it saw of OpenTelemetry (the no-configuration test).

Configuration comes from the environment, as in production: ``REDIS_URL``,
``OTEL_*``, ``FRAMEFLOW_TRACE_FILE``, ``FRAMEFLOW_LOG_FORMAT``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time

from pipeline import FrameProducer, ProcessorClient
from pipeline.domain.results import wait_for_results

RESULT_STREAM = "observed:results"
IMAGE = b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9"


class ObservedProcessor(ProcessorClient):
    """Answers ``{"ok": true}``, or raises for frames whose metadata asks it to."""

    async def process_frame(self, frame_data: dict[bytes, bytes]) -> dict:
        import logging

        metadata = json.loads(frame_data[b"metadata"])
        logging.getLogger("tests.observed").info("processing a frame of %d bytes", len(frame_data[b"image_data"]))
        if metadata.get("fail"):
            raise RuntimeError("the frame asked to fail")
        return {"ok": True}


def build_processor(processor_id: str, capability: str, max_retries: int) -> ObservedProcessor:
    ObservedProcessor.max_retries = max_retries
    return ObservedProcessor(
        processor_id=processor_id,
        capabilities=[capability],
        orchestrator_url="unused",
        capacity=4,
        result_stream=RESULT_STREAM,
        health_port=0,
        health_check_interval=0.5,
    )


def run_processor(args: argparse.Namespace) -> None:
    processor = build_processor(args.processor_id, args.capability, args.max_retries)
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    asyncio.run(processor.start())


def publish(args: argparse.Namespace) -> None:
    from opentelemetry import trace

    producer = FrameProducer(max_age_ms=10_000)
    tracer = trace.get_tracer("tests.observed")
    for spec in json.loads(args.spec):
        with tracer.start_as_current_span("capture"):
            decision = producer.publish(
                camera_id=spec.get("camera_id", "cam-1"),
                image=IMAGE,
                capabilities=[spec["capability"]],
                width=64,
                height=48,
                metadata={"fail": bool(spec.get("fail"))},
                timestamp=time.time() - float(spec.get("age_s", 0)),
                max_age_ms=int(spec.get("max_age_ms", 10_000)),
            )
        print(json.dumps({"frame_id": decision.frame_id, "targets": list(decision.targets)}), flush=True)
    producer.close()


def read_results(args: argparse.Namespace) -> None:
    import redis
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind

    from pipeline.domain import telemetry

    telemetry.configure_tracing()
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    tracer = trace.get_tracer("tests.observed")
    for result in wait_for_results(client, RESULT_STREAM, args.count, timeout_s=30):
        parent = propagate.extract(json.loads(result.get("trace_context") or "{}"))
        with tracer.start_as_current_span(f"handle {RESULT_STREAM}", context=parent, kind=SpanKind.CONSUMER):
            print(json.dumps(result), flush=True)


def roundtrip(args: argparse.Namespace) -> None:
    """Everything in one process with whatever OTEL_* there is (none, in the test)."""
    import redis
    from opentelemetry import trace

    processor = build_processor("solo-1", "solo", 0)
    thread = threading.Thread(target=asyncio.run, args=(processor.start(),), daemon=True)
    thread.start()
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    deadline = time.monotonic() + 20
    while not client.exists("frameflow:processor:solo-1"):
        if time.monotonic() > deadline:
            raise SystemExit("the processor did not register")
        time.sleep(0.02)
    producer = FrameProducer()
    decision = producer.publish(camera_id="cam-1", image=IMAGE, capabilities=["solo"], width=64, height=48)
    results = wait_for_results(client, RESULT_STREAM, 1, timeout_s=20)
    processor.stop()
    thread.join(20)
    producer.close()
    print(
        json.dumps(
            {
                "targets": list(decision.targets),
                "results": len(results),
                "trace_context": results[0].get("trace_context") if results else None,
                "provider": type(trace.get_tracer_provider()).__name__,
                # The SDK's tracing (providers, span processors, exporters); redis-py imports its metrics part.
                "sdk_tracing_imported": any(name.startswith("opentelemetry.sdk.trace") for name in sys.modules),
            }
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.observed")
    commands = parser.add_subparsers(dest="command", required=True)
    processor = commands.add_parser("processor")
    processor.add_argument("processor_id")
    processor.add_argument("capability")
    processor.add_argument("--max-retries", type=int, default=0)
    processor.set_defaults(run=run_processor)
    publisher = commands.add_parser("publish")
    publisher.add_argument("spec")
    publisher.set_defaults(run=publish)
    reader = commands.add_parser("read-results")
    reader.add_argument("count", type=int)
    reader.set_defaults(run=read_results)
    commands.add_parser("roundtrip").set_defaults(run=roundtrip)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
