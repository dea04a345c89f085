"""A processor started before its Redis: it waits, gives up in one line, or stops at once on SIGTERM.

Each launcher is a real process: the seed's script (``asyncio.run(processor.start())``, run as
``tests/seed_face_processor.py``), ``python -m workers.sample`` (``run_until_signalled``) and
``frameflow worker``. Their Redis is an embedded one on a free port, started while they wait, or
nothing at all; a Sentinel URL points at closed ports, or at sentinels that accept a connection and
never answer. What they print is read from their output: one WARNING line per try naming the masked
URL and the next pause, one line when they give up, never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline import EmbeddedRedis, FrameProducer, ProcessorRegistry
from pipeline.streams.embedded import free_port
from tests.cli_harness import FRAMEFLOW
from tests.processes import ROOT, WorkerProcess, wait_until, worker_env

PASSWORD = "wait-s3cret"
RETRY_LINE = "is not answering"
GAVE_UP_LINE = "cannot reach Redis at"

#: How soon after SIGTERM a waiting processor must have exited (measured: well under half a second).
STOPS_WITHIN_S = 2.0


@dataclasses.dataclass(frozen=True)
class Launcher:
    """One way of running a processor, and what that processor serves."""

    name: str
    command: tuple[str, ...]
    processor_id: str
    capability: str
    result_stream: str


SEED_SCRIPT = Launcher(
    "seed script",
    (sys.executable, str(ROOT / "tests" / "seed_face_processor.py")),
    "face-recognition-1",  # the guide's own id, hard-coded in the script
    "face_detection",
    "faces:detected",
)
PYTHON_MODULE = Launcher(
    "python -m workers.sample", (sys.executable, "-m", "workers.sample"), "sample-waits", "sample", "samples:processed"
)
FRAMEFLOW_WORKER = Launcher(
    "frameflow worker", (*FRAMEFLOW, "worker", "workers.sample"), "sample-waits", "sample", "samples:processed"
)


def launch(launcher: Launcher, url: str, tmp_path: Path, **env: str) -> WorkerProcess:
    """``launcher`` as a process of its own session whose Redis is ``url``, its output in a file."""
    environment = worker_env(
        url,
        lease_ms=10_000,
        max_deliveries=5,
        PROCESSOR_ID=launcher.processor_id,
        HEALTH_CHECK_INTERVAL="0.5",
        FRAMEFLOW_LOG_FORMAT="text",  # level names on the seed script's lines too
        **env,
    )
    return WorkerProcess(list(launcher.command), environment, tmp_path / f"{launcher.processor_id}.log")


def output_of(process: WorkerProcess) -> str:
    return process.log_path.read_text(errors="replace")


def retry_lines(process: WorkerProcess) -> list[str]:
    return [line for line in output_of(process).splitlines() if RETRY_LINE in line]


def retrying(process: WorkerProcess, tries: int = 1) -> bool:
    """True once ``process`` logged ``tries`` retries; fails at once if it exited instead."""
    assert process.alive(), f"it exited ({process.process.returncode}) instead of waiting:\n{process.log_tail()}"
    return len(retry_lines(process)) >= tries


def masked(url: str) -> str:
    return url.replace(PASSWORD, "***")


def assert_no_traceback(process: WorkerProcess) -> None:
    output = output_of(process)
    assert "Traceback" not in output, output
    assert PASSWORD not in output, output


@pytest.fixture
def running() -> Iterator[list[WorkerProcess]]:
    """The processes a test started, killed (with their group) if the test left them running."""
    processes: list[WorkerProcess] = []
    yield processes
    for process in processes:
        process.stop(timeout=0)


# -- (a) started before its Redis: waits, then works --------------------------------------------------
@pytest.mark.parametrize("launcher", [SEED_SCRIPT, FRAMEFLOW_WORKER], ids=lambda launcher: launcher.name)
def test_processor_started_before_its_redis_waits_then_processes_a_frame(
    launcher: Launcher, tmp_path: Path, running: list[WorkerProcess]
) -> None:
    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    process = launch(launcher, url, tmp_path)  # FRAMEFLOW_WAIT_FOR_REDIS unset: wait as long as it takes
    running.append(process)
    wait_until(lambda: retrying(process, tries=3), 30, f"{launcher.name} to retry three times")

    with EmbeddedRedis(port=port, extra_args=["--requirepass", PASSWORD]):
        client = redis.Redis.from_url(url)
        registry = ProcessorRegistry(client)
        wait_until(
            lambda: registry.get(launcher.processor_id) or not process.alive(),
            30,
            f"{launcher.name} to register",
        )
        assert process.alive(), process.log_tail()
        producer = FrameProducer(url)
        decision = producer.publish(
            camera_id="cam-1", image=b"x" * 1500, capabilities=[launcher.capability], width=1, height=1
        )
        producer.close()
        assert decision.targets == (launcher.processor_id,)
        wait_until(lambda: client.xlen(launcher.result_stream) == 1, 20, f"{launcher.name}'s result")
        [(_, result)] = client.xrange(launcher.result_stream)
        assert result[b"frame_id"].decode() == decision.frame_id
        assert process.stop() == 0, process.log_tail()
        client.close()

    assert_no_traceback(process)
    lines = retry_lines(process)
    assert all("WARNING" in line and masked(url) in line and "retrying in" in line for line in lines), lines


# -- (b) its Redis never comes: one line, exit code 1, once FRAMEFLOW_WAIT_FOR_REDIS is spent -----------
@pytest.mark.parametrize("launcher", [SEED_SCRIPT, FRAMEFLOW_WORKER], ids=lambda launcher: launcher.name)
def test_processor_gives_up_in_one_line_when_the_wait_is_spent(
    launcher: Launcher, tmp_path: Path, running: list[WorkerProcess]
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    began = time.monotonic()
    process = launch(launcher, url, tmp_path, FRAMEFLOW_WAIT_FOR_REDIS="2")
    running.append(process)

    returncode = process.process.wait(timeout=30)
    assert time.monotonic() - began >= 2, process.log_tail()
    assert returncode == 1, process.log_tail()
    assert_no_traceback(process)
    assert len(retry_lines(process)) >= 2, process.log_tail()  # it waited, saying so
    lines = output_of(process).strip().splitlines()
    gave_up = [line for line in lines if GAVE_UP_LINE in line]
    assert gave_up == [lines[-1]], lines
    assert f"{GAVE_UP_LINE} {masked(url)}" in lines[-1]


# -- (c) SIGTERM during the wait: exit 0 at once --------------------------------------------------------
@contextlib.contextmanager
def silent_sentinels() -> Iterator[tuple[str, socket.socket]]:
    """Two sentinels that accept connections and never answer: each try would cost a socket timeout each."""
    with socket.create_server(("127.0.0.1", 0)) as first, socket.create_server(("127.0.0.1", 0)) as second:
        ports = first.getsockname()[1], second.getsockname()[1]
        yield f"redis+sentinel://:{PASSWORD}@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/mymaster", first


URLS = {
    "redis": lambda: f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0",
    "sentinels on closed ports": lambda: (
        f"redis+sentinel://:{PASSWORD}@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/mymaster"
    ),
}


def stop_and_time(process: WorkerProcess) -> tuple[int, float]:
    """SIGTERM ``process``; its exit code and the seconds it took to exit."""
    began = time.monotonic()
    process.terminate()
    returncode = process.process.wait(timeout=30)
    return returncode, time.monotonic() - began


@pytest.mark.parametrize("url_kind", list(URLS))
@pytest.mark.parametrize("launcher", [SEED_SCRIPT, PYTHON_MODULE, FRAMEFLOW_WORKER], ids=lambda launcher: launcher.name)
def test_sigterm_during_the_wait_stops_the_processor_at_once(
    launcher: Launcher, url_kind: str, tmp_path: Path, running: list[WorkerProcess]
) -> None:
    url = URLS[url_kind]()
    process = launch(launcher, url, tmp_path, FRAMEFLOW_WAIT_FOR_REDIS="60")
    running.append(process)
    wait_until(lambda: retrying(process), 30, f"{launcher.name} to wait for Redis")

    returncode, took_s = stop_and_time(process)

    assert returncode == 0, process.log_tail()
    assert took_s < STOPS_WITHIN_S, f"{launcher.name} took {took_s:.1f}s to stop:\n{process.log_tail()}"
    assert_no_traceback(process)
    assert all(masked(url) in line for line in retry_lines(process)), process.log_tail()


@pytest.mark.parametrize("launcher", [SEED_SCRIPT, FRAMEFLOW_WORKER], ids=lambda launcher: launcher.name)
def test_sigterm_stops_a_processor_whose_sentinels_never_answer(
    launcher: Launcher, tmp_path: Path, running: list[WorkerProcess]
) -> None:
    with silent_sentinels() as (url, first):
        process = launch(launcher, url, tmp_path, FRAMEFLOW_WAIT_FOR_REDIS="60")
        running.append(process)
        first.settimeout(30)
        connection, _ = first.accept()  # its first try is under way, and will not end by itself for seconds
        with connection:
            returncode, took_s = stop_and_time(process)

    assert returncode == 0, process.log_tail()
    assert took_s < STOPS_WITHIN_S, f"{launcher.name} took {took_s:.1f}s to stop:\n{process.log_tail()}"
    assert_no_traceback(process)
