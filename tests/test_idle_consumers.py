"""The consumers of dead workers leave the queues' consumer groups (issue 14): the scheduler removes
those that hold nothing and showed no sign of life for ``FRAMEFLOW_IDLE_CONSUMER_S``, never a live
consumer waiting on an empty queue, never one that still holds an entry."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
import redis

from pipeline import RedisStreamsBroker
from pipeline.errors import BadSetting
from pipeline.processes.idle_consumers import remove_idle_consumers
from pipeline.processes.scheduler import IDLE_PASSES_PER_PERIOD
from pipeline.settings import MIN_IDLE_CONSUMER_S, Settings
from tests.chaos import Fleet
from tests.cli_harness import FRAMEFLOW
from tests.polling import wait_until
from tests.processes import GROUP, QUEUE, WorkerProcess, consumer_pids, worker_command

#: The shortest idle period the scheduler accepts: dead consumers go within seconds.
IDLE_S = MIN_IDLE_CONSUMER_S

#: How long a worker process may take to boot and read its queue on a busy machine.
BOOT_S = 30

#: The processor whose queue the tests use, and that queue's stream.
PROCESSOR_ID = "idle-1"
PROCESSOR_STREAM = f"frames:ready:{PROCESSOR_ID}"

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")


@pytest.fixture
def fleet(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[Fleet]:
    started = Fleet(redis_url, tmp_path, lease_ms=1000, max_deliveries=3)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def producer(redis_url: str, redis_client: redis.Redis) -> Iterator[RedisStreamsBroker]:
    """The test process's broker: it sends, it never consumes."""
    broker = RedisStreamsBroker(redis_url, lease_ms=1000, max_deliveries=3)
    broker.declare_queue(QUEUE)
    yield broker
    broker.close()


def start_scheduler(fleet: Fleet) -> WorkerProcess:
    """``frameflow scheduler`` as a real process, with the shortest idle period."""
    command = [*FRAMEFLOW, "--redis-url", fleet.redis_url, "scheduler", "--interval", "0.5"]
    return fleet.spawn(command, "scheduler", FRAMEFLOW_IDLE_CONSUMER_S=f"{IDLE_S:g}", FRAMEFLOW_LOG_FORMAT="text")


def wait_reading(client: redis.Redis, stream: str, *processes: WorkerProcess) -> None:
    """Wait until each process has its consumer in the stream's group."""
    for process in processes:

        def reading(process: WorkerProcess = process) -> bool:
            assert process.alive(), f"{process!r} died while booting:\n{process.log_tail()}"
            return process.pid in consumer_pids(client, stream)

        wait_until(reading, BOOT_S, f"process {process.pid} to read {stream}")


def wait_for_a_pass_after(client: redis.Redis, moment: float, scheduler: WorkerProcess) -> None:
    """Wait until the scheduler has run an idle-consumer pass that began after ``moment`` (epoch s).

    A pass runs in a tick before its health entry, at most every ``IDLE_S / IDLE_PASSES_PER_PERIOD``:
    the second tick that begins after ``moment`` plus that period has run one."""
    since = moment + IDLE_S / IDLE_PASSES_PER_PERIOD

    def later_ticks() -> bool:
        assert scheduler.alive(), scheduler.log_tail()
        return sum(float(fields[b"at"]) > since for _, fields in client.xrange("frameflow:health")) >= 2

    wait_until(later_ticks, 30, lambda: f"two scheduler ticks after {since:.1f}:\n{scheduler.log_tail()}")


def pending_by_pid(client: redis.Redis, stream: str = QUEUE) -> dict[int, int]:
    """Each consumer's pending count, by the pid in its name (``host:pid:id``)."""
    return {
        int(consumer["name"].decode().rsplit(":", 2)[1]): int(consumer["pending"])
        for consumer in client.xinfo_consumers(stream, GROUP)
    }


def removals_logged(scheduler: WorkerProcess) -> int:
    text = scheduler.log_path.read_text(errors="replace")
    return sum(int(count) for count in re.findall(r"Removed (\d+) idle consumer\(s\)", text))


def test_restarted_workers_leave_only_the_live_consumers_after_a_scheduler_pass(
    redis_client: redis.Redis, fleet: Fleet
) -> None:
    # Restarts: two worker processes of the broker's queue and two of one processor, killed...
    dead_workers = [fleet.spawn(worker_command(2), "worker"), fleet.spawn(worker_command(2), "worker")]
    dead_processors = [fleet.echo(PROCESSOR_ID), fleet.echo(PROCESSOR_ID)]
    wait_reading(redis_client, QUEUE, *dead_workers)
    wait_reading(redis_client, PROCESSOR_STREAM, *dead_processors)
    for process in (*dead_workers, *dead_processors):
        process.kill()
    # ... and started again: these live on, idle, their queues empty.
    worker, processor = fleet.spawn(worker_command(2), "worker"), fleet.echo(PROCESSOR_ID)
    wait_reading(redis_client, QUEUE, worker)
    wait_reading(redis_client, PROCESSOR_STREAM, processor)
    live_since = time.time()
    scheduler = start_scheduler(fleet)

    wait_until(
        lambda: (
            consumer_pids(redis_client, QUEUE) == {worker.pid}
            and consumer_pids(redis_client, PROCESSOR_STREAM) == {processor.pid}
        ),
        30,
        lambda: f"only the live consumers in the groups:\n{scheduler.log_tail()}",
    )
    wait_for_a_pass_after(redis_client, live_since + IDLE_S, scheduler)  # the live ones idle longer than IDLE_S

    assert consumer_pids(redis_client, QUEUE) == {worker.pid}
    assert consumer_pids(redis_client, PROCESSOR_STREAM) == {processor.pid}
    assert removals_logged(scheduler) == 4, scheduler.log_tail()


def test_a_dead_consumer_holding_an_entry_stays_until_it_holds_nothing(
    redis_client: redis.Redis, fleet: Fleet, producer: RedisStreamsBroker
) -> None:
    holder = fleet.spawn(worker_command(2), "holder")
    wait_reading(redis_client, QUEUE, holder)
    producer.enqueue(
        dramatiq.Message(queue_name=QUEUE, actor_name="hang_first_time", args=("job",), kwargs={}, options={})
    )
    wait_until(lambda: redis_client.lrange("job:attempts", 0, -1), 10, "the holder to start the job")
    holder.kill()  # mid-message: its consumer holds the entry
    killed_at = time.time()
    scheduler = start_scheduler(fleet)

    wait_for_a_pass_after(redis_client, killed_at + IDLE_S, scheduler)  # it showed no sign of life for IDLE_S
    assert pending_by_pid(redis_client) == {holder.pid: 1}

    taker = fleet.spawn(worker_command(2), "taker")  # takes the entry over: its lease lapsed long ago
    done = wait_until(lambda: redis_client.lrange("job:done", 0, -1), BOOT_S, lambda: taker.log_tail())
    assert [int(pid) for pid in done] == [taker.pid]
    wait_until(
        lambda: pending_by_pid(redis_client) == {taker.pid: 0},
        30,
        lambda: (
            f"the holder's consumer to go once it held nothing: {pending_by_pid(redis_client)}\n{scheduler.log_tail()}"
        ),
    )


def test_a_consumer_that_says_it_lives_stays_however_long_redis_counts_it_idle(
    broker: RedisStreamsBroker, redis_client: redis.Redis
) -> None:
    keys = broker.keys_for(QUEUE)
    redis_client.xgroup_create(keys.stream, GROUP, id="0", mkstream=True)
    for name in ("silent", "talking"):
        redis_client.xgroup_createconsumer(keys.stream, GROUP, name)
    idle_s = 0.2
    wait_until(
        lambda: min(consumer["idle"] for consumer in redis_client.xinfo_consumers(keys.stream, GROUP)) > 2000 * idle_s,
        10,
        "Redis to count both consumers idle",
    )
    redis_client.zadd(keys.consumers, {"talking": int(time.time() * 1000)})  # what a running consumer writes

    assert remove_idle_consumers(broker, idle_s) == {keys.stream: ["silent"]}
    assert [consumer["name"] for consumer in redis_client.xinfo_consumers(keys.stream, GROUP)] == [b"talking"]


def test_the_idle_period_has_a_floor_and_a_default() -> None:
    assert Settings.from_env({}).idle_consumer_s == 300
    assert Settings.from_env({"FRAMEFLOW_IDLE_CONSUMER_S": "3"}).idle_consumer_s == 3
    with pytest.raises(BadSetting, match="FRAMEFLOW_IDLE_CONSUMER_S='1' must be 3 or more"):
        Settings.from_env({"FRAMEFLOW_IDLE_CONSUMER_S": "1"})
