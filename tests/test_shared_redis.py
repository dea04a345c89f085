"""Processes with no Redis configured find the same one: ``localhost:6379`` when it answers, else the
shared embedded Redis (``pipeline/streams/shared_redis.py``) that the first starts and the others find.

Each test runs in a network namespace of its own (:mod:`tests.private_network`): there nothing
answers on ``localhost:6379`` unless the test starts it, and the machine's own Redis is never touched.
Every process gets a runtime folder of the test's own, so none meets the developer's shared server.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.domain.keys import parked_key
from pipeline.errors import EmbeddedRedisError
from pipeline.settings import Settings
from pipeline.streams.embedded import EmbeddedRedis
from pipeline.streams.runtime_files import RuntimeDir, ServerRecord
from pipeline.streams.shared_redis import running_shared_redis, stop_shared_redis
from tests.polling import wait_until
from tests.private_network import in_private_network
from tests.processes import ROOT, command_line, pid_running

#: Seconds the shared server outlives its last user in these tests.
GRACE_S = 0.5

#: A process that uses the broker without configuration until its stdin closes (or it is killed).
USER = textwrap.dedent(
    """
    import sys
    from pipeline.streams.broker import RedisStreamsBroker

    sys.stdin.readline()  # "go": every user of a concurrent start waits here, imports done
    broker = RedisStreamsBroker()
    server = broker.client.connection_pool.connection_kwargs  # the server it got, whatever chose it
    print(f"redis://{server['host']}:{server['port']}/{server.get('db', 0)}", flush=True)
    sys.stdin.readline()
    broker.close()
    """
)

#: A camera's process: publishes argv[1] frames to the ``echo`` capability with no Redis configured.
PRODUCER = textwrap.dedent(
    """
    import sys
    from pipeline import FrameProducer

    producer = FrameProducer()
    for number in range(int(sys.argv[1])):
        producer.publish(
            camera_id="cam-1", image=b"jpeg", capabilities=["echo"], width=4, height=4, frame_id=f"frame-{number}"
        )
    producer.close()
    """
)


def unconfigured_env(runtime_dir: Path) -> dict[str, str]:
    """No REDIS_URL, REDIS_HOST or frameflow setting; the test's runtime folder and a short grace."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("REDIS_", "FRAMEFLOW_"))}
    env.update(
        FRAMEFLOW_RUNTIME_DIR=str(runtime_dir),
        FRAMEFLOW_SHARED_REDIS_GRACE_S=str(GRACE_S),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def runtime_folder() -> Iterator[Path]:
    """A runtime folder of the test's own; whatever shared server it still names is stopped at the end."""
    with tempfile.TemporaryDirectory(prefix="frameflow-shared-") as parent:
        path = Path(parent, "runtime")
        try:
            yield path
        finally:
            stop_shared_redis(Settings(runtime_dir=str(path)))


def shared_server(runtime_dir: Path) -> ServerRecord | None:
    return running_shared_redis(Settings(runtime_dir=str(runtime_dir)))


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def wait_until_gone(record: ServerRecord, runtime_dir: Path) -> None:
    """The watchdog exited, its redis-server with it, and the runtime folder names no server."""
    wait_until(lambda: not record.watchdog.alive(), 15, "the shared server's watchdog to exit")
    assert not answers(record.url)
    assert RuntimeDir(runtime_dir).read_record() is None


def start_user(runtime_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", USER],
        cwd=ROOT,
        env=unconfigured_env(runtime_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def go(user: subprocess.Popen[str]) -> str:
    """Let ``user`` build its broker; the URL it got."""
    assert user.stdin is not None and user.stdout is not None
    user.stdin.write("go\n")
    user.stdin.flush()
    url = user.stdout.readline().strip()
    assert url, f"the user printed no URL: {user.communicate()[1] if user.poll() is not None else ''}"
    return url


def finish(users: list[subprocess.Popen[str]]) -> None:
    for user in users:
        if user.poll() is None:
            user.kill()
        user.wait()
        for pipe in (user.stdin, user.stdout, user.stderr):
            if pipe is not None:
                pipe.close()


def echo_processor(runtime_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    """The seed's way, ``redis_url`` left at its default: ``python -m tests.echo_processor echo-1 echo``."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.echo_processor", "echo-1", "echo"],
            cwd=ROOT,
            env=unconfigured_env(runtime_dir),
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def registered(url: str, processor_id: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).exists(f"frameflow:processor:{processor_id}"))
    except redis.RedisError:
        return False


def exchange_frames(runtime_dir: Path, expected_url: str | None, frames: int = 5) -> tuple[str, str]:
    """A processor process and then a producer process, neither configured; the Redis the results
    landed on (asserted there) and the producer's stderr. ``expected_url``: ``None`` for the shared server."""
    log = runtime_dir.parent / "processor.log"
    processor = echo_processor(runtime_dir, log)
    try:
        if expected_url is None:
            record = wait_until(lambda: shared_server(runtime_dir), 30, lambda: f"a shared server: {log.read_text()}")
            assert record.started_by == processor.pid
            url = record.url
        else:
            url = expected_url
        wait_until(lambda: registered(url, "echo-1"), 30, lambda: f"echo-1 to register: {log.read_text()}")
        published = subprocess.run(
            [sys.executable, "-c", PRODUCER, str(frames)],
            cwd=ROOT,
            env=unconfigured_env(runtime_dir),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert published.returncode == 0, published.stderr

        client = redis.Redis.from_url(url)
        wait_until(lambda: client.xlen("echo:results") == frames, 30, "every frame's result on the server")
        echoed = {fields[b"echo"].decode() for _, fields in client.xrange("echo:results")}
        assert echoed == {f"frame-{number}" for number in range(frames)}
        client.close()
    finally:
        processor.send_signal(signal.SIGTERM)
        assert processor.wait(timeout=30) == 0, log.read_text()
    return url, published.stderr


# -- the shared embedded Redis ---------------------------------------------------------------------
@in_private_network
def test_two_unconfigured_processes_exchange_frames_through_one_shared_redis() -> None:
    with runtime_folder() as runtime_dir:
        url, producer_log = exchange_frames(runtime_dir, expected_url=None)

        record = shared_server(runtime_dir)
        assert record is not None and record.url == url
        pattern = rf"no REDIS_URL: using the shared embedded Redis at {re.escape(url)} \(started by pid \d+\)"
        assert re.search(pattern, producer_log), producer_log
        wait_until_gone(record, runtime_dir)  # both processes exited: the server stops after the grace


@in_private_network
def test_the_shared_redis_outlives_its_starter_and_stops_after_its_last_user_is_killed() -> None:
    with runtime_folder() as runtime_dir:
        starter, other = start_user(runtime_dir), start_user(runtime_dir)
        try:
            url = go(starter)
            assert go(other) == url
            record = shared_server(runtime_dir)
            assert record is not None and record.started_by == starter.pid

            starter.kill()
            starter.wait()
            users = RuntimeDir(runtime_dir)
            wait_until(lambda: [user.pid for user in users.live_users()] == [other.pid], 10, "one user left")
            # Still served, for several grace periods, while the other process uses it.
            watched_until = time.monotonic() + 4 * GRACE_S
            while time.monotonic() < watched_until:
                assert answers(url) and record.watchdog.alive()
                time.sleep(0.05)

            other.kill()
            wait_until_gone(record, runtime_dir)
        finally:
            finish([starter, other])


@in_private_network
def test_concurrent_first_starts_make_one_server() -> None:
    with runtime_folder() as runtime_dir:
        users = [start_user(runtime_dir) for _ in range(4)]
        try:
            for user in users:  # every process imported, then all go at once
                assert user.stdin is not None
                user.stdin.write("go\n")
                user.stdin.flush()
            urls = set()
            for user in users:
                assert user.stdout is not None
                urls.add(user.stdout.readline().strip())
            assert len(urls) == 1 and "" not in urls, urls
            watchdogs = [pid for pid in _pids() if "pipeline.streams.redis_watchdog" in command_line(pid)]
            assert len(watchdogs) == 1, watchdogs
            record = shared_server(runtime_dir)
            assert record is not None and record.url in urls

            for user in users:  # a normal exit: each unregisters
                assert user.stdin is not None
                user.stdin.close()
                assert user.wait(timeout=30) == 0
            wait_until_gone(record, runtime_dir)
        finally:
            finish(users)


@in_private_network
def test_frameflow_redis_stop_stops_the_shared_server() -> None:
    with runtime_folder() as runtime_dir:
        env = unconfigured_env(runtime_dir)
        user = start_user(runtime_dir)
        try:
            url = go(user)
            record = shared_server(runtime_dir)
            assert record is not None

            status = frameflow(env, "redis", "status")
            assert f"shared embedded Redis at {url} (started by pid {user.pid}" in status
            assert f"users: {user.pid}" in status
            stopped = frameflow(env, "redis", "stop")
            assert stopped == f"stopped the shared embedded Redis at {url} (started by pid {user.pid})"
            assert not record.watchdog.alive() and not answers(url)
            assert frameflow(env, "redis", "stop") == f"no shared embedded Redis runs (runtime folder {runtime_dir})"
        finally:
            finish([user])


@in_private_network
def test_a_dead_watchdogs_record_is_replaced_by_a_new_server() -> None:
    with runtime_folder() as runtime_dir:
        first = start_user(runtime_dir)
        second = start_user(runtime_dir)
        try:
            old_url = go(first)
            stale = shared_server(runtime_dir)
            assert stale is not None
            os.kill(stale.watchdog.pid, signal.SIGKILL)  # its redis-server dies with it
            wait_until(lambda: not stale.watchdog.alive() and not answers(old_url), 10, "the old server to die")
            assert RuntimeDir(runtime_dir).read_record() == stale  # left behind, naming a dead watchdog

            new_url = go(second)
            fresh = shared_server(runtime_dir)
            assert fresh is not None and fresh.url == new_url != old_url
            assert fresh.watchdog.alive() and fresh.started_by == second.pid and answers(new_url)
        finally:
            finish([first, second])


@in_private_network
def test_an_unconfigured_cli_command_uses_the_shared_redis() -> None:
    with runtime_folder() as runtime_dir:
        user = start_user(runtime_dir)
        try:
            url = go(user)
            frameflow(unconfigured_env(runtime_dir), "enqueue", "--count", "3", "--rate", "100", "--capability", "echo")

            client = redis.Redis.from_url(url)
            assert client.xlen(parked_key("frameflow", "echo")) == 3  # nobody serves echo: parked, on this server
            client.close()
        finally:
            finish([user])


def frameflow(env: dict[str, str], *args: str) -> str:
    """``frameflow ARGS`` as a process; its output, one line expected."""
    run = subprocess.run(
        [sys.executable, "-m", "pipeline.tools.cli", *args],
        cwd=ROOT,
        env={**env, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stdout + run.stderr
    return " ".join(run.stdout.split())


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and pid_running(int(name))]


def test_a_runtime_folder_others_can_enter_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "runtime"
    shared.mkdir()
    shared.chmod(0o755)
    with pytest.raises(EmbeddedRedisError, match=f"the runtime folder {shared} is not private to this user"):
        RuntimeDir(shared).prepare()


# -- the seed's default URL ------------------------------------------------------------------------
@in_private_network
def test_the_seed_default_url_uses_localhost_6379_when_it_answers() -> None:
    with runtime_folder() as runtime_dir, EmbeddedRedis(port=6379) as local:
        _, producer_log = exchange_frames(runtime_dir, expected_url=local.url)

        assert "no REDIS_URL: localhost:6379 answers, using it" in producer_log
        assert shared_server(runtime_dir) is None  # nobody started the shared one
