"""The broker's promises, checked with real worker processes against a real Redis.

Worker processes are ``python -m tests.processes`` (one :class:`dramatiq.Worker`
on ``pipeline.broker``, configured from the environment) or the real Dramatiq
CLI. The actors of :mod:`tests.some_actors` record in Redis what they ran and
where, and the tests poll Redis against deadlines; nothing sleeps to wait.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq
import pytest
import redis

from pipeline import EmbeddedRedis, RedisStreamsBroker
from pipeline.streams.connection import connect
from pipeline.streams.wire import encode_message
from tests.processes import (
    GROUP,
    QUEUE,
    ROOT,
    WorkerProcess,
    command_line,
    consumer_pids,
    parent_pid,
    pid_running,
    queue_is_drained,
    wait_until,
    worker_command,
    worker_env,
)

#: Short leases so that recovery takes seconds; worker processes get them through the environment.
LEASE_MS = 1000
MAX_DELIVERIES = 3

#: How long a worker process may take to boot and start reading its queue.
BOOT_S = 30

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")

Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Starts worker processes (``spawn(url)``, or ``spawn(url, command=[...])``), and always stops them."""
    started: list[WorkerProcess] = []

    def start(
        redis_url: str,
        *,
        command: list[str] | None = None,
        threads: int = 4,
        lease_ms: int = LEASE_MS,
        max_deliveries: int = MAX_DELIVERIES,
    ) -> WorkerProcess:
        env = worker_env(redis_url, lease_ms=lease_ms, max_deliveries=max_deliveries)
        process = WorkerProcess(command or worker_command(threads), env, tmp_path / f"worker-{len(started)}.log")
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.terminate()  # all at once: each takes a second or so to shut down
        for process in started:
            code = process.stop(timeout=5)
            print(f"--- {process!r} ended with {code}; its log ends with:\n{process.log_tail()}")


@pytest.fixture
def producer(redis_url: str, redis_client: redis.Redis) -> Iterator[RedisStreamsBroker]:
    """The test process's broker, on the flushed shared Redis: it sends, it never consumes."""
    broker = RedisStreamsBroker(redis_url, lease_ms=LEASE_MS, max_deliveries=MAX_DELIVERIES)
    broker.declare_queue(QUEUE)
    yield broker
    broker.close()


def message(actor_name: str, *args: object) -> dramatiq.Message:
    """A message for an actor of :mod:`tests.some_actors`, addressed by name."""
    return dramatiq.Message(queue_name=QUEUE, actor_name=actor_name, args=args, kwargs={}, options={})


def send(broker: RedisStreamsBroker, actor_name: str, *args: object) -> dramatiq.Message:
    return broker.enqueue(message(actor_name, *args))


def wait_consuming(client: redis.Redis, *workers: WorkerProcess) -> None:
    """Wait until every worker process reads the queue (it has a consumer in the group)."""
    for worker in workers:

        def reading(worker: WorkerProcess = worker) -> bool:
            assert worker.alive(), f"{worker!r} died while booting:\n{worker.log_tail()}"
            return worker.pid in consumer_pids(client)

        wait_until(reading, BOOT_S, f"worker process {worker.pid} to read {QUEUE}")


def counter(client: redis.Redis, key: str) -> int:
    return int(client.get(key) or 0)


def pids(values: list[bytes]) -> list[int]:
    return [int(value) for value in values]


def consumer_pid(name: bytes) -> int:
    return int(name.decode().rsplit(":", 2)[1])


# -- 1 -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkilled_worker_process_loses_nothing(redis_url, redis_client, producer, spawn) -> None:
    workers = [spawn(redis_url), spawn(redis_url)]
    wait_consuming(redis_client, *workers)

    send(producer, "hang_first_time", "job")
    attempts = wait_until(lambda: redis_client.lrange("job:attempts", 0, -1), 10, "the first attempt to start")
    [victim] = [worker for worker in workers if worker.pid == int(attempts[0])]
    [survivor] = [worker for worker in workers if worker is not victim]

    victim.kill()  # SIGKILL, mid-message: no ack, no requeue, no goodbye
    killed_at = time.monotonic()
    done = wait_until(
        lambda: redis_client.lrange("job:done", 0, -1), LEASE_MS / 1000 + 10, "another worker to finish the job"
    )
    recovered_in = time.monotonic() - killed_at

    assert pids(done) == [survivor.pid]
    assert pids(redis_client.lrange("job:attempts", 0, -1)) == [victim.pid, survivor.pid]
    assert recovered_in < LEASE_MS / 1000 + 5, f"took {recovered_in:.1f}s to recover a {LEASE_MS} ms lease"
    wait_until(lambda: queue_is_drained(redis_client), 10, "the stream to be drained")
    assert producer.dead_letter_queue(QUEUE).list() == []
    assert survivor.alive()


# -- 2 -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_message_running_ten_leases_long_runs_exactly_once(redis_url, redis_client, producer, spawn) -> None:
    workers = [spawn(redis_url), spawn(redis_url)]
    wait_consuming(redis_client, *workers)
    seconds = 10 * LEASE_MS / 1000

    send(producer, "long_task", "long", seconds)
    runs = wait_until(lambda: redis_client.lrange("long:runs", 0, -1), 10, "the long task to start")
    [owner] = [worker for worker in workers if worker.pid == int(runs[0])]
    [other] = [worker for worker in workers if worker is not owner]

    idle_seen: list[int] = []

    def finished_while_leased() -> list[bytes]:
        # Read the pending entry before the result: while there is no result, the
        # message is unacknowledged, so its entry must be pending with its owner.
        pending = redis_client.xpending_range(QUEUE, GROUP, "-", "+", 10)
        done = redis_client.lrange("long:done", 0, -1)
        if done:
            return done
        assert len(pending) == 1, pending
        assert consumer_pid(pending[0]["consumer"]) == owner.pid, f"the other worker took it: {pending}"
        assert pending[0]["times_delivered"] == 1, pending
        idle_seen.append(pending[0]["time_since_delivered"])
        assert other.alive(), other.log_tail()
        return []

    done = wait_until(finished_while_leased, seconds + 15, "the long task to finish", interval=0.05)

    assert pids(done) == [owner.pid]
    assert pids(redis_client.lrange("long:runs", 0, -1)) == [owner.pid]
    assert len(idle_seen) > 20, idle_seen
    assert max(idle_seen) < LEASE_MS, f"the lease was not renewed in time: idle up to {max(idle_seen)} ms"
    wait_until(lambda: queue_is_drained(redis_client), 10, "the stream to be drained")
    assert other.alive() and other.pid in consumer_pids(redis_client)


# -- 3 -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_poison_message_is_dead_lettered_after_max_deliveries(redis_url, redis_client, producer, spawn) -> None:
    dead = producer.dead_letter_queue(QUEUE)
    poison = send(producer, "die", "poison")
    workers: list[WorkerProcess] = []

    def supervise() -> list:
        """Keep one worker process running, replacing each one the poison kills."""
        letters = dead.list()
        if letters:
            return letters
        if not workers or not workers[-1].alive():
            workers.append(spawn(redis_url))
        return []

    timeout = MAX_DELIVERIES * (LEASE_MS / 1000 + BOOT_S / 3) + 10
    letters = wait_until(supervise, timeout, "the poison message to be dead-lettered", interval=0.05)

    deliveries = pids(redis_client.lrange("poison:deliveries", 0, -1))
    assert len(deliveries) == MAX_DELIVERIES, deliveries
    assert deliveries == [worker.pid for worker in workers[:MAX_DELIVERIES]]
    assert [worker.process.wait() for worker in workers[:MAX_DELIVERIES]] == [-signal.SIGKILL] * MAX_DELIVERIES
    [letter] = letters
    assert letter.reason.startswith(f"poison: delivered {MAX_DELIVERIES} times and never acknowledged"), letter
    assert letter.message is not None
    assert (letter.message.message_id, letter.message.actor_name) == (poison.message_id, "die")
    assert redis_client.xlen(QUEUE) == 0

    # The process that dead-lettered it keeps consuming, and the poison never comes back.
    survivor = workers[-1]
    send(producer, "record", "after-poison", 1)
    wait_until(lambda: counter(redis_client, "after-poison:count") == 1, 10, "the next message to run")
    wait_until(lambda: queue_is_drained(redis_client), 10, "the stream to be drained")
    assert survivor.alive() and len(workers) == MAX_DELIVERIES + 1
    assert redis_client.llen("poison:deliveries") == MAX_DELIVERIES
    assert len(dead) == 1


# -- 4 -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ten_thousand_messages_leave_the_stream_empty(redis_url, redis_client, producer, spawn) -> None:
    total = 10_000
    worker = spawn(redis_url, threads=8)
    wait_consuming(redis_client, worker)

    pipe = redis_client.pipeline(transaction=False)
    for number in range(total):  # what broker.enqueue writes, in one round trip
        pipe.xadd(QUEUE, encode_message(message("record", "bulk", number)))
    pipe.execute()
    started = time.monotonic()
    wait_until(
        lambda: counter(redis_client, "bulk:count") >= total,
        60,
        lambda: f"{total} messages to run ({counter(redis_client, 'bulk:count')} did)",
        interval=0.05,
    )
    wait_until(lambda: queue_is_drained(redis_client), 10, "the stream to be drained")
    elapsed = time.monotonic() - started

    assert counter(redis_client, "bulk:count") == total
    assert redis_client.scard("bulk:values") == total
    assert redis_client.xlen(QUEUE) == 0
    [group] = redis_client.xinfo_groups(QUEUE)
    assert group["pending"] == 0
    assert producer.dead_letter_queue(QUEUE).list() == []
    assert worker.alive()
    # The only consumer can lose no lease: entries acked while a renewal is under way are not "lost".
    assert "Lost the lease" not in worker.log_path.read_text(), worker.log_tail()
    print(f"{total} messages in {elapsed:.1f}s")


# -- 5 -------------------------------------------------------------------------------------------
@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, persisting to an append-only file, so it can be restarted."""
    with EmbeddedRedis(appendonly=True) as server:
        yield server


@pytest.mark.slow
def test_worker_process_survives_a_redis_restart(private_redis: EmbeddedRedis, spawn) -> None:
    url = private_redis.url
    client = connect(url)
    producer = RedisStreamsBroker(url, lease_ms=LEASE_MS, max_deliveries=MAX_DELIVERIES)
    producer.declare_queue(QUEUE)
    try:
        worker = spawn(url)
        wait_consuming(client, worker)
        batch = 200
        for number in range(batch):
            send(producer, "record", "restart", number, 5)
        wait_until(lambda: counter(client, "restart:count") >= 20, 20, "the first messages to run")

        ran_before_restart = counter(client, "restart:count")
        private_redis.restart()
        assert ran_before_restart < batch, "the restart was meant to happen mid-run"

        for number in range(batch, 2 * batch):
            send(producer, "record", "restart", number, 5)
        wait_until(
            lambda: client.scard("restart:values") == 2 * batch,
            60,
            lambda: f"{2 * batch} messages to run ({client.scard('restart:values')} did)\n{worker.log_tail()}",
            interval=0.05,
        )
        wait_until(lambda: queue_is_drained(client), 20, "the stream to be drained")

        assert client.smembers("restart:values") == {str(number).encode() for number in range(2 * batch)}
        assert counter(client, "restart:count") >= 2 * batch  # at least once; a restart may repeat some
        assert producer.dead_letter_queue(QUEUE).list() == []
        assert worker.alive(), worker.log_tail()
        assert pids(client.smembers("restart:pids")) == [worker.pid]

        send(producer, "record", "after-restart", 1)
        wait_until(lambda: counter(client, "after-restart:count") == 1, 10, "the worker to keep consuming")
    finally:
        producer.close()
        client.close()


@pytest.mark.slow
def test_running_message_keeps_its_lease_when_the_consumer_is_replaced(redis_url, redis_client, producer) -> None:
    """What a Redis outage longer than the client's retries does to a worker process, in one process:
    Dramatiq's consumer thread gets ConnectionClosed, closes its consumer and consumes anew, while
    the message already handed to a worker thread keeps running. Its lease must still be renewed."""
    worker_side = RedisStreamsBroker(redis_url, lease_ms=LEASE_MS, max_deliveries=MAX_DELIVERIES)
    worker_side.declare_queue(QUEUE)
    try:
        send(producer, "record", "replaced", 1)
        first = worker_side.consume(QUEUE, prefetch=2, timeout=50)
        running = wait_until(lambda consumer=first: next(consumer), 5, "the message to be delivered")
        first.close()  # what ConsumerThread does after ConnectionClosed...
        del first
        gc.collect()
        second = worker_side.consume(QUEUE, prefetch=2, timeout=50)  # ...before it consumes anew

        elsewhere = producer.consume(QUEUE, prefetch=2, timeout=50)  # another process's consumer
        watched_until = time.monotonic() + 3 * LEASE_MS / 1000
        while time.monotonic() < watched_until:
            taken = next(elsewhere)
            assert taken is None, "another consumer took over a message that is still running"
            [entry] = redis_client.xpending_range(QUEUE, GROUP, "-", "+", 10)
            assert entry["times_delivered"] == 1 and entry["time_since_delivered"] < LEASE_MS, entry

        second.ack(running)  # the worker thread's ack goes through the new consumer
        assert queue_is_drained(redis_client)
        assert second.held_ids() == []
    finally:
        worker_side.close()


# -- 6 -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_malformed_entry_is_dead_lettered_and_worker_process_keeps_going(
    redis_url, redis_client, producer, spawn
) -> None:
    worker = spawn(redis_url)
    wait_consuming(redis_client, worker)

    not_json = redis_client.xadd(QUEUE, {"message": b"{not json"}).decode()
    no_envelope = redis_client.xadd(QUEUE, {"camera": b"no envelope here"}).decode()
    send(producer, "record", "after-malformed", 1)

    wait_until(lambda: counter(redis_client, "after-malformed:count") == 1, 10, "the next message to run")
    letters = {letter.fields["dead_entry_id"]: letter for letter in producer.dead_letter_queue(QUEUE).list()}
    assert set(letters) == {not_json, no_envelope}
    assert letters[not_json].reason.startswith("malformed entry: the 'message' field is not valid JSON")
    assert letters[not_json].fields["message"] == "{not json"
    assert letters[no_envelope].reason == "malformed entry: the entry has no 'message' field (fields: camera)"
    assert all(letter.message is None for letter in letters.values())
    wait_until(lambda: queue_is_drained(redis_client), 10, "the stream to be drained")
    assert worker.alive(), worker.log_tail()


# -- 7 -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dramatiq_cli_processes_messages(redis_url, redis_client, producer, spawn) -> None:
    dramatiq_cli = Path(sys.executable).with_name("dramatiq")
    cli = spawn(redis_url, command=[str(dramatiq_cli), "pipeline.broker", "tests.some_actors", "-p", "2", "-t", "4"])

    def two_workers_reading() -> set[int]:
        assert cli.alive(), cli.log_tail()
        readers = consumer_pids(redis_client)
        return readers if len(readers) == 2 else set()

    workers = wait_until(two_workers_reading, BOOT_S, "the CLI's two worker processes to read the queue")
    assert {parent_pid(pid) for pid in workers} == {cli.pid}

    total = 100
    for number in range(total):
        send(producer, "record", "cli", number)
    wait_until(lambda: redis_client.scard("cli:values") == total, 30, "the CLI's workers to run every message")
    wait_until(lambda: queue_is_drained(redis_client), 10, "the stream to be drained")

    assert counter(redis_client, "cli:count") == total
    assert set(pids(redis_client.smembers("cli:pids"))) <= workers
    assert producer.dead_letter_queue(QUEUE).list() == []
    assert cli.stop(timeout=30) == 0, cli.log_tail()
    assert not any(pid_running(pid) for pid in workers)


# -- 8 -------------------------------------------------------------------------------------------
EMBEDDED_CHILD = textwrap.dedent(
    """
    import sys

    from pipeline import EmbeddedRedis

    server = EmbeddedRedis().start()
    print(server.process.pid, server.port, flush=True)
    sys.stdin.readline()  # until the test closes stdin (a normal exit) or kills us
    """
)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["sigkill", "normal-exit"])
def test_embedded_redis_leaves_no_orphan(ending: str) -> None:
    """(A broker without configuration uses the shared embedded Redis instead, which outlives its
    starter on purpose and stops after its last user: tests/test_shared_redis.py.)"""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("REDIS_", "FRAMEFLOW_"))}
    child = subprocess.Popen(
        [sys.executable, "-c", EMBEDDED_CHILD],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    server_pid = None
    try:
        assert child.stdout is not None and child.stdin is not None
        line = child.stdout.readline()
        assert line, f"the child printed nothing (exit code {child.wait()})"
        server_pid, port = (int(part) for part in line.split())
        assert pid_running(server_pid) and parent_pid(server_pid) == child.pid
        assert "redis-server" in " ".join(command_line(server_pid))
        assert redis.Redis(port=port, socket_connect_timeout=2).ping()

        if ending == "sigkill":
            child.kill()
            assert child.wait(timeout=10) == -signal.SIGKILL
        else:
            child.stdin.close()
            assert child.wait(timeout=20) == 0

        wait_until(lambda: not pid_running(server_pid), 10, f"redis-server {server_pid} to go away")
        assert not port_open(port)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if server_pid is not None and pid_running(server_pid) and "redis-server" in " ".join(command_line(server_pid)):
            os.kill(server_pid, signal.SIGKILL)  # the orphan this test found: do not leave it either
