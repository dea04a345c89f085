"""Faults, with real processes and a real Redis: nothing accepted is lost.

Each test ends with :func:`tests.chaos.account`: frames ``publish`` accepted,
processed (a result on ``echo:results``), duplicated (results beyond the first),
dropped with a reason (Redis's drop counters) and lost (the rest: it must be 0),
appended to ``FRAMEFLOW_FAULT_REPORT`` when that names a file
(``scripts/fault_table.py`` renders the README's table from it).

Processors are :mod:`tests.echo_processor` processes with unbounded queues and
frames that do not go stale, so every accepted frame is owed a result.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline import EmbeddedRedis, FrameProducer, ProcessorRegistry
from pipeline.processes.slots import PREFETCH_PER_SLOT
from pipeline.streams.connection import connect
from pipeline.streams.embedded import free_port
from pipeline.streams.wire import decode_entry
from tests.chaos import (
    BOOT_S,
    HEARTBEAT_S,
    Camera,
    Fleet,
    account,
    results_per_frame,
    unprocessed,
    wait_registered,
    whereabouts,
)
from tests.processes import GROUP, pending_count, wait_until

#: Short leases: a killed worker's frames move on within a second.
LEASE_MS = 1000

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(redis_url, tmp_path, lease_ms=LEASE_MS)
    yield fleet
    fleet.stop_all()


def queue_stream(processor_id: str) -> str:
    return f"frames:ready:{processor_id}"


def wait_all_processed(client: redis.Redis, owed: list[str], timeout: float = 30) -> None:
    wait_until(
        lambda: not unprocessed(owed, client),
        timeout,
        lambda: (
            f"every accepted frame to be processed ({len(unprocessed(owed, client))} of {len(owed)} are not; "
            f"Redis holds {whereabouts(client)})"
        ),
        interval=0.1,
    )


# -- worker SIGKILL, repeated ----------------------------------------------------------------------
KILLS = 5
CAPACITY = 2
FRAMES_PER_KILL = 60


def test_repeated_worker_sigkill_processes_every_accepted_frame(redis_url, redis_client, fleet) -> None:
    ids = ("echo-a", "echo-b")
    workers = {processor_id: fleet.echo(processor_id, delay_s=0.03, capacity=CAPACITY) for processor_id in ids}
    for processor_id, process in workers.items():
        wait_registered(redis_client, processor_id, process)

    camera = Camera(redis_url, frames=2000, interval_s=0.02)
    camera.start()
    for kill in range(KILLS):
        victim_id = ids[kill % 2]
        stream = queue_stream(victim_id)
        # One kill every FRAMES_PER_KILL frames, mid-processing: the victim holds frames it has not acknowledged.
        wait_until(lambda kill=kill: camera.sent() >= (kill + 1) * FRAMES_PER_KILL, 30, "the camera to go on")
        wait_until(lambda stream=stream: pending_count(redis_client, stream) > 0, 20, f"{victim_id} to hold frames")
        workers[victim_id].kill()
        workers[victim_id] = fleet.echo(victim_id, delay_s=0.03, capacity=CAPACITY)
        wait_registered(redis_client, victim_id, workers[victim_id])
    wait_until(lambda: camera.sent() >= (KILLS + 1) * FRAMES_PER_KILL, 30, "the camera to go on")
    camera.finish()
    assert camera.refused == []
    owed = camera.owed()

    wait_all_processed(redis_client, owed)
    figures = account("worker SIGKILL during processing (5 kills, restarted)", owed, redis_client)
    figures.record()
    assert (figures.processed, figures.lost, figures.dropped) == (len(owed), 0, {}), figures
    # A killed worker can have finished, and written the results of, at most what it held
    # without an ack: its prefetch (PREFETCH_PER_SLOT x capacity) plus the finished frames whose
    # acks were on their way (the broker holds at most twice the prefetch). So each kill can
    # repeat at most 2 x prefetch frames; nothing else may.
    assert figures.duplicated <= KILLS * 2 * PREFETCH_PER_SLOT * CAPACITY, figures
    assert all(process.alive() for process in workers.values())


# -- worker SIGTERM ----------------------------------------------------------------------------------
def test_worker_sigterm_finishes_in_flight_frames_and_redelivers_nothing(redis_url, redis_client, fleet) -> None:
    worker = fleet.echo("echo-a", delay_s=0.3, capacity=CAPACITY)
    wait_registered(redis_client, "echo-a", worker)
    camera = Camera(redis_url, frames=40, interval_s=0)
    camera.run()  # here: every frame is queued before the signal
    owed = camera.owed()
    assert len(camera.accepted) == 40

    stream = queue_stream("echo-a")
    wait_until(
        lambda: len(results_per_frame(redis_client)) >= 4 and pending_count(redis_client, stream) >= CAPACITY,
        20,
        "echo-a to be busy with frames",
    )
    in_flight = {
        decode_entry(fields).args[0]["frame_id"]
        for entry in redis_client.xpending_range(stream, GROUP, "-", "+", 100)
        for _, fields in redis_client.xrange(stream, entry["message_id"], entry["message_id"])
    }
    worker.terminate()
    assert worker.process.wait(30) == 0, worker.log_tail()

    # Everything it had started is finished and acknowledged; what it had prefetched is back in the stream.
    # It held (in_flight) its running frames and, read ahead, one more per slot (PREFETCH_PER_SLOT): the
    # running ones (capacity of them, the queue being full and each frame 0.3 s long) must have finished.
    assert pending_count(redis_client, stream) == 0
    finished = in_flight & set(results_per_frame(redis_client))
    back = {decode_entry(fields).args[0]["frame_id"] for _, fields in redis_client.xrange(stream)}
    assert in_flight and in_flight <= finished | back, "a frame it held was neither finished nor handed back"
    assert len(finished) >= len(in_flight) - (PREFETCH_PER_SLOT - 1) * CAPACITY, "a frame in flight was not finished"

    successor = fleet.echo("echo-a", delay_s=0.01, capacity=CAPACITY)
    wait_registered(redis_client, "echo-a", successor)
    wait_all_processed(redis_client, owed)
    figures = account("worker SIGTERM while processing", owed, redis_client)
    figures.record()
    assert (figures.processed, figures.duplicated, figures.lost) == (40, 0, 0), figures
    assert max(results_per_frame(redis_client).values()) == 1


# -- Redis killed and restarted --------------------------------------------------------------------
@pytest.fixture
def aof_redis() -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own with AOF fsynced on every write, so a SIGKILL loses nothing it acknowledged."""
    with EmbeddedRedis(appendonly=True, extra_args=["--appendfsync", "always"]) as server:
        yield server


def test_redis_sigkilled_and_restarted_with_aof_loses_no_acknowledged_frame(aof_redis, tmp_path) -> None:
    client = connect(aof_redis.url)
    fleet = Fleet(aof_redis.url, tmp_path, lease_ms=LEASE_MS)
    camera = Camera(aof_redis.url, frames=2000, interval_s=0.02)
    try:
        workers = {processor_id: fleet.echo(processor_id, capacity=CAPACITY) for processor_id in ("echo-a", "echo-b")}
        scheduler = fleet.scheduler()  # as the Procfile runs it: it releases frames parked while Redis was away
        for processor_id, process in workers.items():
            wait_registered(client, processor_id, process)
        camera.start()
        wait_until(lambda: len(results_per_frame(client)) >= 50, 20, "the first results")

        aof_redis.kill()  # SIGKILL: appendfsync always, so every write Redis acknowledged is in the AOF
        wait_until(lambda: camera.refused, 20, "a publish to fail while Redis is down")
        aof_redis.start()
        sent_at_restart = camera.sent()
        wait_until(lambda: camera.sent() >= sent_at_restart + 100, 30, "the camera to publish again")
        camera.finish()

        owed = camera.owed()
        wait_all_processed(client, owed)
        figures = account(
            "Redis SIGKILL + restart (AOF, appendfsync always)", owed, client, refused=len(camera.refused)
        )
        figures.record()
        assert (figures.processed, figures.lost, figures.dropped) == (len(owed), 0, {}), figures
        # Both processors reconnected on their own: the same processes, registered again.
        registry = ProcessorRegistry(client)
        for processor_id, process in workers.items():
            assert process.alive(), process.log_tail()
            info = registry.get(processor_id)
            assert info is not None and info.pid == process.pid
        assert scheduler.alive(), scheduler.log_tail()
    finally:
        camera.finish()
        fleet.stop_all()
        client.close()


# -- Redis unreachable at start ---------------------------------------------------------------------
PASSWORD = "chaos-s3cret"
UNREACHABLE_LINE = "is not answering"


def test_processes_started_before_redis_retry_with_backoff_then_work(tmp_path) -> None:
    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    masked = f"redis://:***@127.0.0.1:{port}/0"
    fleet = Fleet(url, tmp_path, lease_ms=LEASE_MS)
    frameflow = str(Path(sys.executable).with_name("frameflow"))
    server = EmbeddedRedis(port=port, extra_args=["--requirepass", PASSWORD])
    spawned_at = time.monotonic()
    try:
        started = {
            "scheduler": fleet.scheduler(),
            "frameflow worker": fleet.spawn(
                [frameflow, "--wait-for-redis", "30", "worker", "workers.sample"], "worker", PROCESSOR_ID="sample-cli"
            ),
            "python -m workers.sample": fleet.spawn(
                [sys.executable, "-m", "workers.sample"],
                "seed",
                PROCESSOR_ID="sample-seed",
                FRAMEFLOW_WAIT_FOR_REDIS="30",
            ),
        }

        def retry_lines(process) -> list[str]:
            return [
                line for line in process.log_path.read_text(errors="replace").splitlines() if UNREACHABLE_LINE in line
            ]

        # Let each of them try for a while: five retries, at growing intervals (0.1 s, 0.2 s, ...: 1.5 s).
        for name, process in started.items():
            wait_until(lambda process=process: len(retry_lines(process)) >= 5, 30, f"{name} to retry five times")
        for name, process in started.items():
            assert process.alive(), f"{name} gave up:\n{process.log_tail()}"
        waited_s = time.monotonic() - spawned_at
        server.start()

        client = redis.Redis.from_url(url)
        registry = ProcessorRegistry(client)
        wait_until(lambda: client.xlen("frameflow:health") > 0, 20, "the scheduler's first health entry")
        wait_until(
            lambda: {"sample-cli", "sample-seed"} <= set(registry.known_ids()), 20, "both processors to register"
        )
        producer = FrameProducer(url)
        decisions = [
            producer.publish(camera_id="cam-1", image=b"\xff\xd8x\xff\xd9", capabilities=["sample"], width=1, height=1)
            for _ in range(10)
        ]
        producer.close()
        wait_until(lambda: client.xlen("samples:processed") == 10, 20, "the frames' results")
        assert all(decision.targets for decision in decisions)
        figures = account(
            "Redis unreachable at start (password URL), then started",
            [decision.frame_id for decision in decisions],
            client,
            stream="samples:processed",
        )
        figures.record()
        assert (figures.processed, figures.duplicated, figures.lost) == (10, 0, 0), figures

        for name, process in started.items():
            log = process.log_path.read_text(errors="replace")
            assert PASSWORD not in log, f"{name} printed the password"
            lines = retry_lines(process)
            assert all(masked in line for line in lines), lines
            # Backoff, no flood: one line per attempt, the pause doubling from 0.1 s to 5 s at most, so
            # a wait of W seconds logs at most 6 + W / 5 lines (not 10 a second, as before).
            assert len(lines) <= 6 + waited_s / 5, f"{name} logged {len(lines)} lines in {waited_s:.1f}s:\n{log}"
            assert process.alive(), process.log_tail()
        client.close()
    finally:
        fleet.stop_all()
        server.stop()


# -- the scheduler killed while it re-routes a dead processor's backlog ---------------------------
BACKLOG = 400
SCHEDULER_KILLS = 3


def test_scheduler_sigkilled_while_rerouting_reroutes_each_frame_once(redis_url, redis_client, fleet) -> None:
    registry = ProcessorRegistry(redis_client)
    doomed = fleet.echo("echo-a", delay_s=60)  # takes frames and never finishes one
    wait_registered(redis_client, "echo-a", doomed)
    camera = Camera(redis_url, frames=BACKLOG, interval_s=0)
    camera.run()  # every frame goes to echo-a, the only processor
    owed = camera.owed()
    assert len(camera.accepted) == BACKLOG
    backlog = queue_stream("echo-a")

    peer = fleet.echo("echo-b", delay_s=0.002, capacity=4)
    doomed.kill()
    wait_registered(redis_client, "echo-b", peer)
    wait_until(lambda: registry.get("echo-a") is None, 3 * HEARTBEAT_S + 5, "echo-a to be declared dead")
    assert redis_client.xlen(backlog) == BACKLOG

    left_at_kills = []
    for _ in range(SCHEDULER_KILLS):
        before = redis_client.xlen(backlog)
        scheduler = fleet.scheduler(interval_s=0.2)
        wait_until(
            lambda before=before, scheduler=scheduler: (
                redis_client.xlen(backlog) <= before - 40 or not scheduler.alive()
            ),
            BOOT_S,
            "the scheduler to re-route 40 frames",
            interval=0.005,
        )
        scheduler.kill()  # SIGKILL, half-way through the backlog
        left_at_kills.append(redis_client.xlen(backlog))
    assert left_at_kills[0] > 0, "the first scheduler finished before it was killed: a bigger backlog is needed"

    last = fleet.scheduler(interval_s=0.2)
    wait_until(lambda: "echo-a" not in registry.known_ids(), BOOT_S, "the last scheduler to finish reaping echo-a")
    assert redis_client.exists(backlog) == 0
    wait_all_processed(redis_client, owed)
    figures = account(f"scheduler SIGKILL while re-routing ({SCHEDULER_KILLS} kills)", owed, redis_client)
    figures.record()
    print(f"backlog left at each kill: {left_at_kills}")
    assert (figures.processed, figures.duplicated, figures.lost, figures.dropped) == (BACKLOG, 0, 0, {}), figures
    # Each frame was routed once more, to echo-b: no copy waits anywhere else.
    assert int(redis_client.hget("frameflow:counts:{frames:ready:echo-b}", "routed") or 0) == BACKLOG
    assert last.alive() and peer.alive()
