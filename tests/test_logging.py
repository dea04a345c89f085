"""Logs: every line about a frame names its frame, camera, processor and trace.

A real worker process logs as JSON (``FRAMEFLOW_LOG_FORMAT=json``); its lines are
matched against the spans the same processes exported. The formatters themselves
are checked in this process.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis

from pipeline.domain import log_context
from pipeline.domain.log_context import ContextFormatter, FrameContextFilter, JsonFormatter

from .observability import Processes, observed, observed_env, read_spans, run, spans_where, traced_env
from .processes import wait_until


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    group = Processes(tmp_path)
    yield group
    group.stop_all()


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def frame_lines(path: Path, frame_id: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(path) if line.get("frame_id") == frame_id]


@pytest.mark.slow
def test_worker_log_lines_about_a_frame_carry_its_ids_and_its_trace(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, processes
) -> None:
    worker_spans, producer_spans = tmp_path / "worker.jsonl", tmp_path / "producer.jsonl"
    env = traced_env(redis_url, worker_spans, "worker", FRAMEFLOW_LOG_FORMAT="json")
    worker = processes.processor(redis_client, env, "logged-1")
    published = run(
        observed(
            "publish",
            json.dumps([{"capability": "traced", "camera_id": "gate"}, {"capability": "traced", "fail": True}]),
        ),
        traced_env(redis_url, producer_spans, "camera"),
    )
    ok, failing = (json.loads(line)["frame_id"] for line in published.stdout.splitlines())
    wait_until(
        lambda: any("Retries exceeded" in line["message"] for line in frame_lines(worker.log_path, failing)),
        15,
        lambda: f"the failing frame's last line; the log:\n{worker.log_tail()}",
    )
    spans = spans_where(worker_spans, lambda span: span["kind"] == "CONSUMER", 2, "both deliveries")
    consumer = {span["attributes"]["frameflow.frame.id"]: span for span in spans}

    lines = json_lines(worker.log_path)  # every line of the process is JSON, tracebacks included
    assert any(line["message"].startswith("Processor logged-1 is consuming") for line in lines)
    processing = frame_lines(worker.log_path, ok)
    assert [line["message"].split(" of ")[0] for line in processing] == ["processing a frame"]
    assert processing[0]["logger"] == "tests.observed"  # logged by process_frame, on the event loop's thread
    failure = frame_lines(worker.log_path, failing)
    assert any(line["message"].startswith("Failed to process message") and "exception" in line for line in failure)
    assert "RuntimeError: the frame asked to fail" in next(line["exception"] for line in failure if "exception" in line)
    for frame_id, camera_id, about in ((ok, "gate", processing), (failing, "cam-1", failure)):
        for line in about:
            assert line["camera_id"] == camera_id
            assert line["processor_id"] == "logged-1"
            assert line["trace_id"] == consumer[frame_id]["trace_id"]
            assert line["span_id"] == consumer[frame_id]["span_id"]
    assert not [line for line in lines if "processing a frame" in line["message"] and "frame_id" not in line]


@pytest.mark.slow
def test_with_tracing_off_in_the_worker_log_lines_still_name_the_producers_trace(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, processes
) -> None:
    producer_spans = tmp_path / "producer.jsonl"
    worker = processes.processor(redis_client, observed_env(redis_url, FRAMEFLOW_LOG_FORMAT="json"), "untraced-1")
    published = run(
        observed("publish", json.dumps([{"capability": "traced"}])), traced_env(redis_url, producer_spans, "camera")
    )
    frame_id = json.loads(published.stdout)["frame_id"]
    (line,) = wait_until(lambda: frame_lines(worker.log_path, frame_id), 15, "the frame's log line")
    (send,) = [span for span in read_spans(producer_spans) if span["kind"] == "PRODUCER"]
    assert line["trace_id"] == send["trace_id"]
    assert "span_id" not in line  # no span of its own in an untraced worker
    assert (line["camera_id"], line["processor_id"]) == ("cam-1", "untraced-1")


def _record(logger: logging.Logger, stream: io.StringIO, formatter: logging.Formatter) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.addFilter(FrameContextFilter())
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def test_text_lines_about_a_frame_get_its_context_and_other_lines_stay_as_they_were() -> None:
    logger = logging.getLogger("tests.logging.text")
    stream = io.StringIO()
    handler = _record(logger, stream, ContextFormatter(logging.Formatter("%(levelname)s %(message)s")))
    frame = {
        "frame_id": "f-1",
        "camera_id": "porch",
        "trace_context": json.dumps({"traceparent": f"00-{'a' * 32}-{'b' * 16}-01"}),
    }
    message = dramatiq.Message(
        queue_name="frames.ready.p-1",
        actor_name="a",
        args=(frame,),
        kwargs={},
        options={"frame": True, "processor": "p-1"},
    )
    try:
        logger.info("before")
        with log_context.bound(message):
            logger.warning("about the frame")
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")
        logger.info("after")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    context = f"[frame_id=f-1 camera_id=porch processor_id=p-1 trace_id={'a' * 32}]"
    assert lines[0] == "INFO before"
    assert lines[1] == f"WARNING about the frame {context}"
    assert lines[2] == f"ERROR failed {context}"  # the context stays on the line, above the traceback
    assert lines[3] == "Traceback (most recent call last):"
    assert lines[-1] == "INFO after"


def test_json_lines_carry_the_fields_and_the_exception() -> None:
    logger = logging.getLogger("tests.logging.json")
    stream = io.StringIO()
    handler = _record(logger, stream, JsonFormatter())
    message = dramatiq.Message(queue_name="default", actor_name="plain", args=(1,), kwargs={}, options={})
    try:
        with log_context.bound(message):
            try:
                raise KeyError("k")
            except KeyError:
                logger.exception("plain actor failed")
        logger.info("idle")
    finally:
        logger.removeHandler(handler)
    about, idle = (json.loads(line) for line in stream.getvalue().splitlines())
    assert about["message"] == "plain actor failed" and about["level"] == "ERROR"
    assert about["message_id"] == message.message_id
    assert "frame_id" not in about and "trace_id" not in about  # a plain message: no frame, no trace
    assert "KeyError: 'k'" in about["exception"]
    assert set(idle) == {"time", "level", "logger", "message", "process", "thread"}
