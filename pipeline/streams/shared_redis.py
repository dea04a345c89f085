"""Which Redis a process uses when none is configured: one that every frameflow process of the
machine finds, so that frames published by one reach the processors of another.

Without ``REDIS_URL`` (or ``REDIS_HOST``), a process uses ``localhost:6379`` when a Redis answers
there (the seed's default means what it says); else the **shared embedded Redis**: the first
process starts it, the others find it through the runtime folder (:mod:`.runtime_files`: its
URL, its users, a lock against two starting at once). The server belongs to a small detached
watchdog (:mod:`.redis_watchdog`), not to the process that started it, so it outlives that
process while others still use it; the watchdog stops it a grace period after its last user is
gone (SIGKILLed users included), or at once on ``frameflow redis stop`` (:func:`stop_shared_redis`).

A process uses the server from :func:`default_redis` until it releases what that returned
(a broker does on ``close``); its registration is also removed when it exits.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from pipeline.errors import EmbeddedRedisError
from pipeline.settings import Settings, mask_url

from .runtime_files import ProcessStamp, RuntimeDir, ServerRecord

logger = logging.getLogger(__name__)

#: The seed's default Redis: used without configuration whenever it answers.
LOCAL_REDIS_URL = "redis://localhost:6379"

#: How long the PING of ``localhost:6379`` may take: nothing listening answers at once.
LOCAL_PROBE_TIMEOUT_S = 0.5

#: How long a starter waits for the watchdog to report its server ready.
START_TIMEOUT_S = 30.0

#: The folder that holds the ``pipeline`` package, put on the watchdog's path.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclasses.dataclass
class DefaultRedis:
    """The Redis a process without configuration uses; :meth:`release` when done with it."""

    url: str
    server: ServerRecord | None = None  #: the shared embedded server, when it is the one
    _runtime: RuntimeDir | None = dataclasses.field(default=None, repr=False)

    def release(self) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            _users.leave(runtime)


def default_redis(settings: Settings | None = None) -> DefaultRedis:
    """``localhost:6379`` when it answers, else the shared embedded Redis (found or started).

    Logs one WARNING line saying which, since nobody chose it.

    Raises:
      EmbeddedRedisError: the shared server could not be started, or the runtime folder is unusable.
    """
    settings = settings or Settings.from_env()
    if _answers(LOCAL_REDIS_URL):
        logger.warning("no REDIS_URL: localhost:6379 answers, using it")
        return DefaultRedis(LOCAL_REDIS_URL)
    runtime = RuntimeDir(settings.runtime_dir).prepare()
    record = _users.join(runtime, settings.shared_redis_grace_s)
    logger.warning(
        "no REDIS_URL: using the shared embedded Redis at %s (started by pid %d)",
        mask_url(record.url),
        record.started_by,
    )
    return DefaultRedis(record.url, record, runtime)


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(
        url, socket_connect_timeout=LOCAL_PROBE_TIMEOUT_S, socket_timeout=LOCAL_PROBE_TIMEOUT_S
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def running_shared_redis(settings: Settings | None = None) -> ServerRecord | None:
    """The shared embedded Redis that runs now, or ``None``."""
    runtime = RuntimeDir((settings or Settings.from_env()).runtime_dir)
    record = runtime.read_record() if runtime.path.is_dir() else None
    return record if record is not None and record.watchdog.alive() else None


def shared_redis_users(settings: Settings | None = None) -> list[ProcessStamp]:
    """The live processes registered as users of the shared embedded Redis."""
    runtime = RuntimeDir((settings or Settings.from_env()).runtime_dir)
    return runtime.live_users() if runtime.users_dir.is_dir() else []


def stop_shared_redis(settings: Settings | None = None, timeout_s: float = 15.0) -> ServerRecord | None:
    """Stop the shared embedded Redis now (its users lose it); the server stopped, or ``None`` when none ran.

    Raises:
      EmbeddedRedisError: its watchdog did not exit within ``timeout_s``.
    """
    record = running_shared_redis(settings)
    if record is None:
        return None
    try:
        os.kill(record.watchdog.pid, signal.SIGTERM)
    except ProcessLookupError:
        return record
    deadline = time.monotonic() + timeout_s
    while record.watchdog.alive():
        if time.monotonic() > deadline:
            raise EmbeddedRedisError(
                f"the watchdog of the shared embedded Redis (pid {record.watchdog.pid}) did not stop"
            )
        time.sleep(0.05)
    return record


class _Users:
    """This process's registration as a user, counted: several brokers of one process register it once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holds: dict[tuple[Path, int], int] = {}  # (runtime folder, pid) -> brokers holding it
        atexit.register(self._leave_all)

    def join(self, runtime: RuntimeDir, grace_s: float) -> ServerRecord:
        """Register this process with the running server, starting one when none runs."""
        me = ProcessStamp.current()
        with self._lock, runtime.locked():
            record = runtime.read_record()
            if record is None or not record.watchdog.alive():
                runtime.remove_record()
                runtime.clear_users()  # the users of a server that is gone
                runtime.register(me)  # before the watchdog counts its users
                try:
                    record = _start_watchdog(runtime, grace_s)
                except EmbeddedRedisError:
                    runtime.unregister(me.pid)
                    raise
            else:
                runtime.register(me)  # again after a server restart cleared it
            key = (runtime.path, me.pid)
            self._holds[key] = self._holds.get(key, 0) + 1
        return record

    def leave(self, runtime: RuntimeDir) -> None:
        with self._lock:
            key = (runtime.path, os.getpid())
            held = self._holds.get(key, 0) - 1
            if held > 0:
                self._holds[key] = held
                return
            self._holds.pop(key, None)
            runtime.unregister(key[1])

    def _leave_all(self) -> None:
        for path, pid in list(self._holds):
            if pid == os.getpid():  # not a registration inherited through fork
                RuntimeDir(path).unregister(pid)
        self._holds.clear()


_users = _Users()


def _start_watchdog(runtime: RuntimeDir, grace_s: float) -> ServerRecord:
    """Start the watchdog in a session of its own and wait until it reports its server ready."""
    search_path = [
        _PACKAGE_ROOT,
        *(os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(search_path)}
    command = [sys.executable, "-m", "pipeline.streams.redis_watchdog", str(runtime.path), repr(grace_s)]
    with open(runtime.log_file, "ab") as log:
        watchdog = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=runtime.path,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C or a process manager's SIGTERM to our group spare it
        )
    assert watchdog.stdout is not None
    with watchdog.stdout:
        readable, _, _ = select.select([watchdog.stdout], [], [], START_TIMEOUT_S)
        ready = bool(readable) and watchdog.stdout.readline().strip() == b"ready"
    record = runtime.read_record() if ready else None
    if record is None:
        if watchdog.poll() is None:
            watchdog.kill()
        watchdog.wait()
        raise EmbeddedRedisError(f"the shared embedded Redis did not start: {_log_tail(runtime)}")
    return record


def _log_tail(runtime: RuntimeDir, lines: int = 3) -> str:
    try:
        text = runtime.log_file.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(no output)"
