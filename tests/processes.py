"""Real worker processes for the multi-process tests, and the polling helpers they need.

``python -m tests.processes`` *is* one worker process: it imports
``pipeline.broker`` (the broker configured from ``REDIS_URL``,
``FRAMEFLOW_LEASE_MS`` and ``FRAMEFLOW_MAX_DELIVERIES``, exactly as
``dramatiq pipeline.broker`` does), imports :mod:`tests.some_actors`, runs a
:class:`dramatiq.Worker` and stops it cleanly on SIGTERM. Unlike the Dramatiq
CLI, whose main process shuts every worker down when one of them dies, this
is a single process the tests can SIGKILL and replace one at a time.

Nothing here sleeps to synchronise: :func:`wait_until` polls a predicate (that
reads Redis or ``/proc``) against a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

import redis

from tests.polling import wait_until as wait_until  # re-exported for the process tests

#: The repository root: worker processes run there so ``tests.some_actors`` imports.
ROOT = Path(__file__).resolve().parent.parent

#: The queue (and stream) the test actors use.
QUEUE = "default"
GROUP = "workers"


# -- processes seen through /proc ------------------------------------------------------------
def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` (``R``, ``S``, ``Z``...) or ``None`` when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def pid_running(pid: int) -> bool:
    """True while ``pid`` is a live process; a zombie (dead, not yet reaped) counts as gone."""
    state = process_state(pid)
    return state is not None and state not in ("Z", "X", "x")


def command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


# -- what Redis says about the consumers -----------------------------------------------------
def consumer_pids(client: redis.Redis, stream: str = QUEUE) -> set[int]:
    """The pids of the processes that have a consumer in the stream's group (``host:pid:id`` names)."""
    try:
        consumers = client.xinfo_consumers(stream, GROUP)
    except redis.exceptions.ResponseError:  # no stream or no group yet
        return set()
    return {int(consumer["name"].decode().rsplit(":", 2)[1]) for consumer in consumers}


def pending_count(client: redis.Redis, stream: str = QUEUE) -> int:
    try:
        return int(client.xpending(stream, GROUP)["pending"])
    except redis.exceptions.ResponseError:
        return 0


def queue_is_drained(client: redis.Redis, stream: str = QUEUE) -> bool:
    """Nothing left in the stream and nothing pending in its group."""
    return client.xlen(stream) == 0 and pending_count(client, stream) == 0


# -- worker processes, seen from the test ----------------------------------------------------
def worker_env(redis_url: str, *, lease_ms: int, max_deliveries: int, **extra: str) -> dict[str, str]:
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(("REDIS_", "FRAMEFLOW_", "dramatiq_"))
    }
    env.update(
        REDIS_URL=redis_url,
        FRAMEFLOW_LEASE_MS=str(lease_ms),
        FRAMEFLOW_MAX_DELIVERIES=str(max_deliveries),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class WorkerProcess:
    """A child process (by default ``python -m tests.processes``) in its own session,
    with its output in ``log_path``."""

    def __init__(self, command: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.command = command
        self.log_path = log_path
        self._terminated = False
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def kill(self) -> None:
        """SIGKILL the process and wait for it (its children, if any, are left to :meth:`stop`)."""
        if self.alive():
            self.process.kill()
        self.process.wait()

    def terminate(self) -> None:
        """SIGTERM the process, once (the Dramatiq CLI forwards it to its workers, and
        takes a second one as "kill them now")."""
        if self.alive() and not self._terminated:
            self.process.terminate()
            self._terminated = True

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM the process, SIGKILL its whole process group after ``timeout`` or once
        it exited; returns its exit code."""
        self.terminate()
        if self.alive():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self._signal_group(signal.SIGKILL)  # whatever is left: the CLI's workers, if it died first
        return self.process.wait()

    def _signal_group(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)  # start_new_session: the group id is our pid

    def __repr__(self) -> str:
        return f"<WorkerProcess pid={self.pid} returncode={self.process.returncode} {' '.join(self.command[-3:])}>"


def worker_command(threads: int = 4) -> list[str]:
    return [sys.executable, "-m", "tests.processes", "--threads", str(threads)]


# -- the worker process itself ---------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one frameflow worker process for the tests")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s pid=%(process)d %(threadName)s %(name)s %(levelname)s %(message)s",
        stream=sys.stdout,
    )
    import dramatiq

    from pipeline.broker import broker

    importlib.import_module("tests.some_actors")
    broker.emit_after("process_boot")

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())

    worker = dramatiq.Worker(broker, worker_threads=args.threads)
    worker.start()
    logging.getLogger("tests.processes").info("worker process %d is consuming %s", os.getpid(), broker)
    while not stopping.wait(0.5):
        pass
    worker.stop(timeout=10_000)
    broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
