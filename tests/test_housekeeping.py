"""Housekeeping the operator never sees until it bites (issue 14): log lines that stay short whatever
a frame carries, consumer groups that forget dead workers, and rejections kept in the registry."""

from __future__ import annotations

import base64
import json
import os
import sys
import uuid
from pathlib import Path

import redis

from pipeline import ProcessorRegistry
from pipeline.domain.frames import now_ms
from tests.cli_harness import frameflow_process, table_header, table_row
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


def test_rejections_reach_the_registry_and_the_cli(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    processor = echo_processor(redis_url, "rej-1", tmp_path / "processor.log")
    registry = ProcessorRegistry(redis_client)
    try:
        wait_until(lambda: registry.get("rej-1"), 30, lambda: processor.log_tail())
        redis_client.xadd("frames:ready:rej-1", frame_entry({**valid_frame(), "format": b"gif"}, "rej-1"))
        info = wait_until(
            lambda: (found := registry.get("rej-1")) is not None and found.rejected == 1 and found,
            30,
            lambda: f"a heartbeat counting the rejection:\n{processor.log_tail()}",
        )
        table = frameflow_process("--redis-url", redis_url, "processors")
        listing = frameflow_process("--redis-url", redis_url, "processors", "--json")
    finally:
        processor.stop()
    assert info.last_rejection.startswith("FrameRefused: "), info
    assert table.returncode == 0, table.stderr
    headers = table_header(table.stdout, "processors")
    assert table_row(table.stdout, "rej-1")[headers.index("rejected")] == "1"
    (entry,) = json.loads(listing.stdout)
    assert (entry["rejected"], entry["last_rejection"]) == (1, info.last_rejection)
