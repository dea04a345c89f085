"""Housekeeping the operator never sees until it bites (issue 14): log lines that stay short whatever
a frame carries, consumer groups that forget dead workers, and rejections kept in the registry."""

from __future__ import annotations

import base64
import os
import sys
import uuid
from pathlib import Path

import redis

from pipeline import ProcessorRegistry
from pipeline.domain.frames import now_ms
from tests.hostile import frame_entry, valid_frame
from tests.polling import wait_until
from tests.processes import WorkerProcess, queue_is_drained, worker_env

#: A log line about a frame is a few hundred characters; one carrying a 1 MB image would be 1.3 million.
LONGEST_LOG_LINE = 2000


def echo_processor(redis_url: str, processor_id: str, log_path: Path) -> WorkerProcess:
    env = worker_env(redis_url, lease_ms=10_000, max_deliveries=3, FRAMEFLOW_LOG_FORMAT="text")
    return WorkerProcess([sys.executable, "-m", "tests.echo_processor", processor_id, "echo"], env, log_path)


def test_a_skipped_frame_logs_one_short_line_without_its_image(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    processor = echo_processor(redis_url, "log-1", tmp_path / "processor.log")
    try:
        wait_until(lambda: ProcessorRegistry(redis_client).get("log-1"), 30, lambda: processor.log_tail())
        image = os.urandom(1024 * 1024)
        frame = {**valid_frame(uuid.uuid4().hex), "image_data": base64.b64encode(image)}
        stale = {"frame": True, "processor": "log-1", "captured_at_ms": now_ms() - 60_000, "max_age_ms": 1000}
        redis_client.xadd("frames:ready:log-1", frame_entry(frame, "log-1", options=stale))
        wait_until(
            lambda: "was skipped" in processor.log_path.read_text(errors="replace"),
            30,
            lambda: f"the skipped line:\n{processor.log_tail()}",
        )
        wait_until(lambda: queue_is_drained(redis_client, "frames:ready:log-1"), 30, "the stale frame's ack")
    finally:
        processor.stop()
    lines = processor.log_path.read_text(errors="replace").splitlines()
    (skipped,) = [line for line in lines if "was skipped" in line]
    assert f"<{len(base64.b64encode(image))} characters>" in skipped or f"<{len(image)} bytes>" in skipped, skipped
    assert max(len(line) for line in lines) < LONGEST_LOG_LINE
