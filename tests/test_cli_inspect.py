"""The CLI's read-only views against a real Redis with real processors: processors, queues, top, results."""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
import redis

from middleware.routing import CapabilityRouter
from pipeline import FrameProducer, ProcessorInfo, ProcessorRegistry, RedisStreamsBroker
from pipeline.processes.scheduler import PipelineScheduler
from tests.cli_harness import COLUMNS, FRAMEFLOW, ROOT, frameflow, table_header, table_row
from tests.processes import WorkerProcess, worker_env
from tests.processor_harness import IMAGE, RecordingProcessor, register_fake, running, wait_for


def publish(redis_url: str, capability: str, count: int) -> list[str]:
    producer = FrameProducer(redis_url)
    try:
        return [
            producer.publish(camera_id="cam-1", image=IMAGE, capabilities=[capability], width=4, height=4).frame_id
            for _ in range(count)
        ]
    finally:
        producer.close()


def processed(client: redis.Redis, processor_id: str) -> int:
    info = ProcessorRegistry(client).get(processor_id)
    return info.processed if info else -1


def echo_processor(redis_url: str, processor_id: str, log_path: Path, **env: str) -> WorkerProcess:
    """A :mod:`tests.echo_processor` process with capability ``echo``."""
    return WorkerProcess(
        [sys.executable, "-m", "tests.echo_processor", processor_id, "echo"],
        worker_env(redis_url, lease_ms=10_000, max_deliveries=3, **env),
        log_path,
    )


def next_beat(registry: ProcessorRegistry, processor_id: str) -> ProcessorInfo:
    """The processor's entry after its next heartbeat."""
    before = registry.get(processor_id)
    assert before is not None, f"{processor_id} is not registered"
    return wait_for(
        lambda: (info := registry.get(processor_id)) is not None and info.heartbeat_at > before.heartbeat_at and info,
        timeout=10,
        what=f"a heartbeat of {processor_id}",
    )


@pytest.fixture
def scheduler(redis_url) -> Iterator[PipelineScheduler]:
    """A :class:`PipelineScheduler` whose jobs the test runs itself."""
    broker = RedisStreamsBroker(redis_url)
    broker.add_middleware(CapabilityRouter())
    yield PipelineScheduler(broker, interval_s=1.0)
    broker.close()


# -- processors ------------------------------------------------------------------------------
def test_processors_lists_every_processor_with_state_counters_and_host(redis_url, redis_client) -> None:
    register_fake(redis_client, "idle-2", ("echo",), capacity=3)
    ProcessorRegistry(redis_client).update("idle-2", draining=True)
    register_fake(redis_client, "flaky-3", ("faces",), breaker="open", breaker_since=time.time())
    redis_client.sadd("frameflow:processors", "gone-4")  # registered once; its entry expired
    with running(RecordingProcessor("echo-1", ["echo", "faces"], redis_url, capacity=2), redis_client):
        publish(redis_url, "echo", 3)  # idle-2 is draining: all three go to echo-1
        wait_for(lambda: processed(redis_client, "echo-1") == 3, what="echo-1's heartbeat to report 3 frames")
        table = frameflow(redis_url, "processors")
        listing = frameflow(redis_url, "processors", "--json")

    assert table.exit_code == 0, table.output
    assert table_header(table.stdout, "processors") == [
        "processor", "capabilities", "capacity", "state", "in flight", "processed", "failed", "rejected",
        "latency ms", "heartbeat", "host",
    ]  # fmt: skip
    echo = table_row(table.stdout, "echo-1")
    assert echo[:8] == ["echo-1", "echo, faces", "2", "live", "0", "3", "0", "0"]
    assert echo[9].endswith("s ago") and float(echo[9].split("s")[0]) < 5
    assert echo[10] == f"{socket.gethostname()}:{os.getpid()}"
    assert table_row(table.stdout, "idle-2")[1:4] == ["echo", "3", "draining"]
    assert table_row(table.stdout, "flaky-3")[3] == "breaker open"
    assert table_row(table.stdout, "gone-4")[3] == "dead"

    entries = {entry["processor_id"]: entry for entry in json.loads(listing.stdout)}
    assert set(entries) == {"echo-1", "idle-2", "flaky-3", "gone-4"}
    assert entries["echo-1"]["processed"] == 3 and entries["echo-1"]["pid"] == os.getpid()
    assert entries["echo-1"]["capabilities"] == ["echo", "faces"]
    assert [entries[name]["state"] for name in ("idle-2", "flaky-3", "gone-4")] == ["draining", "breaker open", "dead"]
    assert entries["gone-4"]["alive"] is False


def test_processors_says_so_when_none_is_registered(redis_url, redis_client) -> None:
    result = frameflow(redis_url, "processors")
    assert result.exit_code == 0
    assert result.stdout.strip() == "no processors registered"


# -- queues ----------------------------------------------------------------------------------
def test_queues_shows_backlog_pending_consumers_delayed_dead_letters_drops_and_parked(
    redis_url, redis_client, broker, worker
) -> None:
    @dramatiq.actor(queue_name="cli.jobs", max_retries=0)
    def explode() -> None:
        raise ValueError("boom")

    explode.send()
    broker.join("cli.jobs", fail_fast=False)
    explode.send_with_options(delay=600_000)

    register_fake(redis_client, "slow-1", ("slow",))
    register_fake(redis_client, "tiny-1", ("tiny",), queue_bound=1, overflow="drop_oldest")
    publish(redis_url, "slow", 3)
    publish(redis_url, "tiny", 3)
    publish(redis_url, "nobody", 2)
    redis_client.xgroup_create("frames:ready:slow-1", "workers", id="0")
    taken = redis_client.xreadgroup("workers", "inspector-1", {"frames:ready:slow-1": ">"}, count=1)
    assert len(taken[0][1]) == 1  # one entry in flight: pending
    redis_client.xadd("echo:results", {"frame_id": "f1"})  # a result stream: not a queue

    table = frameflow(redis_url, "queues")
    listing = frameflow(redis_url, "queues", "--json")

    assert table.exit_code == 0, table.output
    assert table_header(table.stdout, "queues") == [
        "queue", "processor", "backlog", "pending", "consumers", "oldest", "delayed", "dead letters", "dropped",
    ]  # fmt: skip
    slow = table_row(table.stdout, "frames.ready.slow-1")
    assert slow[1:5] == ["slow-1", "2", "1", "1"] and slow[6:] == ["0", "0", "0"]
    assert slow[5].endswith("s")  # the oldest entry's age
    tiny = table_row(table.stdout, "frames.ready.tiny-1")
    assert tiny[1:5] == ["tiny-1", "1", "0", "0"] and tiny[6:] == ["0", "0", "2"]  # two dropped by its bound
    jobs = table_row(table.stdout, "cli.jobs")
    assert jobs[1:5] == ["-", "0", "0", "1"] and jobs[5] == "-" and jobs[6:] == ["1", "1", "0"]
    assert table_row(table.stdout, "nobody")[1] == "2"  # parked frames
    assert "echo" not in table.stdout and "frameflow:" not in table.stdout

    snapshot = json.loads(listing.stdout)
    queues = {entry["queue_name"]: entry for entry in snapshot["queues"]}
    assert set(queues) == {"cli.jobs", "frames.ready.slow-1", "frames.ready.tiny-1"}
    assert {key: queues["frames.ready.slow-1"][key] for key in ("backlog", "pending", "consumers", "stream")} == {
        "backlog": 2,
        "pending": 1,
        "consumers": 1,
        "stream": "frames:ready:slow-1",
    }
    assert queues["frames.ready.tiny-1"]["drops"] == {"bound": 2} and queues["frames.ready.tiny-1"]["backlog"] == 1
    assert (queues["cli.jobs"]["delayed"], queues["cli.jobs"]["dead_letters"]) == (1, 1)
    assert snapshot["parked"] == [{"capability": "nobody", "frames": 2, "oldest_age_s": pytest.approx(0, abs=30)}]


def test_queues_says_so_when_there_are_none(redis_url, redis_client) -> None:
    result = frameflow(redis_url, "queues")
    assert result.exit_code == 0
    assert result.stdout.strip() == "no queues yet"


# -- top -------------------------------------------------------------------------------------
def test_top_shows_processors_and_queues_and_refreshes(redis_url, redis_client) -> None:
    register_fake(redis_client, "slow-1", ("slow",))
    publish(redis_url, "slow", 2)
    with running(RecordingProcessor("echo-1", ["echo"], redis_url), redis_client):
        publish(redis_url, "echo", 2)
        wait_for(lambda: processed(redis_client, "echo-1") == 2, what="echo-1's heartbeat to report 2 frames")
        live = frameflow(redis_url, "top", "--iterations", "2", "--interval", "0.1")
        once = frameflow(redis_url, "top", "--once")

    for result in (live, once):
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("frameflow top  ")
        assert "processors: 2 live, 0 stale, 0 dead" in result.stdout and "backlog: 2" in result.stdout
        assert "frames/s" in table_header(result.stdout, "processors")
        assert table_row(result.stdout, "echo-1")[5] == "2"  # processed
        assert table_row(result.stdout, "frames.ready.slow-1")[2] == "2"  # backlog
        assert table_row(result.stdout, "frames.ready.echo-1")[2] == "0"
        float(table_row(result.stdout, "echo-1")[8])  # frames/s (after "rejected"): its heartbeat's rate


def test_top_shows_a_steady_rate_at_a_steady_frame_rate(redis_url, redis_client, tmp_path, scheduler) -> None:
    """At 10 frames/s, every reading is within 20% of 10 (it read 15.8, 0, 0, 0, 49.1, 0: counter
    differences over top's own refresh, while the counters only move when a heartbeat lands); the
    scheduler's health entry says the same."""
    registry = ProcessorRegistry(redis_client)
    processor = echo_processor(redis_url, "steady-1", tmp_path / "processor.log", ECHO_HEARTBEAT_S="1")
    feed: subprocess.Popen | None = None
    try:
        wait_for(lambda: registry.get("steady-1"), timeout=30, what="steady-1 to register")
        feed = subprocess.Popen(
            [*FRAMEFLOW, "--redis-url", redis_url, "enqueue", "--capability", "echo", "--rate", "10",
             "--width", "64", "--height", "48"],
            cwd=ROOT, env={**os.environ, "COLUMNS": str(COLUMNS)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: processed(redis_client, "steady-1") >= 10, timeout=30, what="frames to flow")
        next_beat(registry, "steady-1")  # the first interval wholly inside the steady flow ends here
        readings, health = [], []
        for _ in range(5):
            next_beat(registry, "steady-1")
            health.append(float(scheduler.emit_health()["frames_per_s"]))
            top = frameflow(redis_url, "top", "--once")
            assert top.exit_code == 0, top.output
            readings.append(float(table_row(top.stdout, "steady-1")[8]))
            health.append(float(scheduler.emit_health()["frames_per_s"]))  # a moment later: the same
    finally:
        if feed is not None:
            feed.kill()
            feed.wait()
        processor.kill()
    assert all(8.0 <= rate <= 12.0 for rate in readings), readings
    assert all(8.0 <= rate <= 12.0 for rate in health), health


# -- results ---------------------------------------------------------------------------------
def test_results_prints_recent_results_readably_and_as_json(redis_url, redis_client) -> None:
    with running(RecordingProcessor("echo-1", ["echo"], redis_url), redis_client):
        frame_ids = publish(redis_url, "echo", 3)
        wait_for(lambda: redis_client.xlen("results:echo-1") == 3, what="three results")
    readable = frameflow(redis_url, "results", "results:echo-1", "--last", "2")
    as_json = frameflow(redis_url, "results", "results:echo-1", "--json")

    assert readable.exit_code == 0, readable.output
    lines = readable.stdout.splitlines()
    assert len(lines) == 3
    produced = {line.split("frame=")[1].split()[0] for line in lines[:2]}
    assert len(produced) == 2 and produced <= set(frame_ids)
    for line in lines[:2]:
        assert "  results:echo-1  echo-1  camera=cam-1  frame=" in line
        assert "latency=" in line and f"image_bytes={len(IMAGE)}" in line
    assert lines[2].startswith("2 result(s) from echo-1 2; processing latency p50 ")

    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert sorted(record["frame_id"] for record in records) == sorted(frame_ids)
    assert all(record["stream"] == "results:echo-1" and record["processor_id"] == "echo-1" for record in records)
    assert [record["id"] for record in records] == sorted((record["id"] for record in records), key=_entry_order)


def _entry_order(entry_id: str) -> tuple[int, int]:
    millis, sequence = entry_id.split("-")
    return int(millis), int(sequence)


def test_results_follow_prints_new_results_until_sigterm(redis_url, redis_client) -> None:
    process = subprocess.Popen(
        [*FRAMEFLOW, "--redis-url", redis_url, "results", "results:echo-1", "--follow", "--last", "10"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": str(COLUMNS)},
    )
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()

    def printed(count: int) -> bool:
        while not lines.empty():
            seen.append(lines.get())
        return len(seen) >= count

    try:
        with running(RecordingProcessor("echo-1", ["echo"], redis_url), redis_client):
            frame_ids = publish(redis_url, "echo", 3)
            wait_for(lambda: printed(3), what="three results printed")
            more = publish(redis_url, "echo", 1)
            wait_for(lambda: printed(4), what="a fourth result printed")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        reader.join(timeout=5)
        printed(6)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert sorted(line.split("frame=")[1].split()[0] for line in seen[:4]) == sorted(frame_ids + more)
    assert seen[4].startswith("4 result(s) from echo-1 4;")


def test_a_killed_processor_shows_stale_until_reaped_and_the_reaping_warns(
    redis_url, redis_client, tmp_path, caplog, scheduler
) -> None:
    """Stale once its heartbeat is over 1.5 intervals old (it showed ``live`` until its entry
    expired at 3), in ``processors`` and ``top``; the scheduler reaps it with one WARNING line."""
    registry = ProcessorRegistry(redis_client)
    processor = echo_processor(redis_url, "killed-1", tmp_path / "processor.log", ECHO_HEARTBEAT_S="1")
    try:
        wait_for(lambda: registry.get("killed-1"), timeout=30, what="killed-1 to register")
        next_beat(registry, "killed-1")
        assert table_row(frameflow(redis_url, "processors").stdout, "killed-1")[3] == "live"
        processor.kill()  # SIGKILL: no deregistration, no last beat

        wait_for(
            lambda: table_row(frameflow(redis_url, "processors").stdout, "killed-1")[3] != "live",
            timeout=10,
            what="killed-1 to show another state than live",
        )
        shown = frameflow(redis_url, "processors").stdout
        top = frameflow(redis_url, "top", "--once").stdout
        listing = {
            entry["processor_id"]: entry for entry in json.loads(frameflow(redis_url, "processors", "--json").stdout)
        }
        assert registry.get("killed-1") is not None, "its entry expired before the CLI looked: not stale but dead"
        assert table_row(shown, "killed-1")[3] == "stale"
        assert table_row(top, "killed-1")[3] == "stale" and "1 stale" in top
        assert table_row(top, "killed-1")[8] == "-"  # no rate for a processor that stopped beating
        assert listing["killed-1"]["state"] == "stale" and listing["killed-1"]["heartbeat_interval_s"] == 1.0

        scheduler.reap_dead()  # sees it (stale, not yet dead): nothing to reap
        wait_for(lambda: registry.get("killed-1") is None, timeout=10, what="killed-1's entry to expire")
        with caplog.at_level(logging.WARNING, logger="pipeline.processes.scheduler"):
            assert scheduler.reap_dead() == {"killed-1": 0}
    finally:
        processor.kill()
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    age_s = re.search(r"killed-1 \(last heartbeat (\d+\.\d)s ago\)", warnings[0])
    assert age_s is not None, warnings
    assert 3.0 <= float(age_s.group(1)) < 10.0  # the entry lived three 1 s intervals after that beat
