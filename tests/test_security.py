"""Locked doors (issue 8, "Security"): TLS and an ACL user end to end, passwords never printed,
health endpoints on loopback, no pickle, and the processor registration allow-list.

The TLS tests run the pipeline as it runs in production, in real processes, over
``rediss://frameflow:PASSWORD@127.0.0.1:PORT/0?ssl_ca_certs=CA`` (:mod:`tests.tls`): a
scheduler, a processor run the seed's way (``frameflow worker``) and one run by Dramatiq's
CLI, cameras (``frameflow enqueue`` and an in-process ``FrameProducer``), the CLI's views.
One run (the module's ``secure_run``) collects everything they printed, everything they
wrote to Redis and everything their endpoints served; the tests read it.
"""

from __future__ import annotations

import ast
import base64
import json
import logging
import os
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
import redis

from middleware.routing import CapabilityRouter
from pipeline import FrameProducer, ProcessorRegistry, RedisStreamsBroker
from pipeline.errors import RegistrationRefused
from pipeline.processes.health import HealthServer
from pipeline.processes.scheduler import PipelineScheduler
from pipeline.streams.direct import DirectRedis
from pipeline.streams.keys import ENVELOPE_FIELD
from tests.cli_harness import FRAMEFLOW
from tests.processes import ROOT, worker_env
from tests.processor_harness import IMAGE, RecordingProcessor, publish, register_fake, running, wait_for
from tests.tls import (
    FRAMES_PER_CAMERA,
    READ_ONLY_COMMANDS,
    Certificates,
    SecureRedis,
    SecureRun,
    collect_secure_run,
    http_get,
    run_all,
    start_secure_redis,
)


# -- the TLS server ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates.make(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def secure_redis_server(certificates: Certificates) -> Iterator[SecureRedis]:
    secure = start_secure_redis(certificates)
    yield secure
    secure.server.stop()


@pytest.fixture
def secure_redis(secure_redis_server: SecureRedis) -> SecureRedis:
    """The session's TLS + ACL server, emptied for this test."""
    secure_redis_server.clear()
    return secure_redis_server


@pytest.fixture(scope="module")
def secure_run(secure_redis_server: SecureRedis, tmp_path_factory: pytest.TempPathFactory) -> SecureRun:
    return collect_secure_run(secure_redis_server, tmp_path_factory.mktemp("secure-run"))


# -- 1. TLS + ACL end to end -------------------------------------------------------------------
def test_frames_flow_over_tls_as_an_acl_user(secure_run: SecureRun) -> None:
    sent = 2 * FRAMES_PER_CAMERA
    assert secure_run.exit_codes["enqueue"] == 0, secure_run.printed["enqueue"]
    assert len(secure_run.results) == sent
    assert len({result["frame_id"] for result in secure_run.results}) == sent
    assert {result["processor_id"] for result in secure_run.results} <= {"sample-tls", "sample-tls-2"}
    assert all(int(result["bytes"]) > 0 and len(result["sha1"]) == 40 for result in secure_run.results)
    # Both ways of running a processor stopped cleanly (SIGTERM) after working over TLS.
    assert secure_run.exit_codes["frameflow worker"] == 0, secure_run.printed["frameflow worker"][-2000:]
    assert secure_run.exit_codes["scheduler"] == 0, secure_run.printed["scheduler"][-2000:]


def test_the_cli_views_work_over_tls(secure_run: SecureRun) -> None:
    for name in READ_ONLY_COMMANDS:
        assert secure_run.exit_codes[f"cli {name}"] == 0, secure_run.printed[f"cli {name}"]
    processors = json.loads(secure_run.printed["cli processors --json stdout"])
    assert {info["processor_id"] for info in processors} >= {"sample-tls", "sample-tls-2"}
    queues = json.loads(secure_run.printed["cli queues --json stdout"])
    assert "frames.ready.sample-tls" in json.dumps(queues)
    assert "sample-tls" in secure_run.printed["cli top --once stdout"]
    assert secure_run.printed["cli results stdout"].count("samples:processed") == 5


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "Error: Redis at rediss://frameflow:***@127.0.0.1:{port}/0?ssl_ca_certs={ca} refused"),
        ("plain redis to the tls port", "Error: cannot reach Redis at redis://frameflow:***@127.0.0.1:{port}/0: "),
        ("unknown ca", "Error: cannot reach Redis at rediss://frameflow:***@127.0.0.1:{port}/0: "),
    ],
)
def test_bad_credentials_and_plain_connections_are_one_clear_line(
    secure_run: SecureRun, case: str, expected: str
) -> None:
    stderr = secure_run.printed[f"cli error: {case} stderr"]
    assert secure_run.exit_codes[f"cli error: {case}"] == 1
    [line] = stderr.splitlines()  # one line, no traceback
    ca = secure_run.secure.certificates.ca_file
    assert line.startswith(expected.format(port=secure_run.secure.port, ca=ca)), line
    if case == "unknown ca":
        assert "CERTIFICATE_VERIFY_FAILED" in line


def test_a_processor_with_a_wrong_password_exits_non_zero_in_one_line(secure_run: SecureRun) -> None:
    assert secure_run.exit_codes["processor with a wrong password"] == 1
    [line] = secure_run.printed["processor with a wrong password stderr"].splitlines()  # no traceback
    assert line.startswith(f"echo-tls: Redis at rediss://frameflow:***@127.0.0.1:{secure_run.secure.port}/0"), line
    assert "refused the credentials" in line


def test_only_tls_clients_with_the_password_get_in(secure_redis: SecureRedis) -> None:
    ca = secure_redis.certificates.ca_file
    anonymous = redis.Redis.from_url(f"rediss://127.0.0.1:{secure_redis.port}/0?ssl_ca_certs={ca}")
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    plain = redis.Redis.from_url(secure_redis.url_with(scheme="redis"), socket_timeout=2)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    # The least privileges: the pipeline's user cannot wipe, reconfigure or watch the server.
    client = secure_redis.client()
    for command in (("FLUSHDB",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("MONITOR",), ("SHUTDOWN",)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    client.close()


def test_direct_connections_speak_tls(secure_redis: SecureRedis) -> None:
    broker = RedisStreamsBroker(secure_redis.url)
    try:
        assert isinstance(broker.direct, DirectRedis)
        assert broker.direct.execute("PING") in (b"PONG", "PONG", True)
        connection = broker.direct._take()
        assert isinstance(connection, redis.SSLConnection)
        broker.direct._give_back(connection)
        entry = broker.direct.execute("XADD", "direct:tls", "*", "field", "value")
        assert secure_redis.client().xrange("direct:tls")[0][0] == entry
    finally:
        broker.close()


def test_mutual_tls_needs_the_client_certificate(certificates: Certificates) -> None:
    secure = start_secure_redis(certificates, mutual=True)
    try:
        assert "ssl_certfile=" in secure.url
        assert redis.Redis.from_url(secure.url).ping()
        without_certificate = redis.Redis.from_url(secure.url_with(), socket_timeout=2)
        with pytest.raises(redis.ConnectionError):
            without_certificate.ping()
    finally:
        secure.server.stop()


# -- 2. passwords never printed -----------------------------------------------------------------
def test_the_password_is_never_printed(secure_run: SecureRun) -> None:
    secrets = {"the password": secure_run.secure.password, "the wrong password": secure_run.printed["wrong password"]}
    sources = {name: text for name, text in secure_run.printed.items() if name != "wrong password"}
    sources["redis"] = secure_run.redis_dump
    for source, text in sources.items():
        for what, secret in secrets.items():
            assert secret not in text, f"{what} appears in {source}"
    # The run printed what it should, masked: the collection above had something to look at.
    assert "rediss://frameflow:***@127.0.0.1" in sources["scheduler"]
    assert " DEBUG " in sources["frameflow worker"] and "DEBUG" in sources["dramatiq worker"]
    assert "DEBUG" in sources["producer logs"] and "sample-tls" in sources["redis"]
    assert "frameflow_frames_processed_total" in sources["processor /metrics"]
    assert '"processor_id": "probe-tls"' in sources["processor /health"]
    assert "AuthenticationError" in sources["library error"]


# -- 3. endpoints on loopback, no pickle --------------------------------------------------------
def test_health_endpoints_bind_the_configured_host(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default (127.0.0.1) is checked by test_processor's health test; here the setting moves it."""
    monkeypatch.setenv("FRAMEFLOW_HEALTH_HOST", "127.0.0.2")
    processor = RecordingProcessor("face-1", ["face_detection"], redis_url, health_port=0)
    with running(processor, redis_client):
        assert processor._health is not None and processor._health._server is not None
        port = processor._health.port
        assert processor._health._server.server_address[0] == "127.0.0.2"
        info = ProcessorRegistry(redis_client).get("face-1")
        assert info is not None and info.health_endpoint == f"http://127.0.0.2:{port}/health"
        assert json.loads(http_get(info.health_endpoint))["processor_id"] == "face-1"
        with pytest.raises(OSError):
            http_get(f"http://127.0.0.1:{port}/health")


def test_the_schedulers_metrics_bind_loopback_unless_configured(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRAMEFLOW_HEALTH_HOST", raising=False)
    assert HealthServer(None, 0).host == "127.0.0.1"
    broker = RedisStreamsBroker(redis_url, middleware=[CapabilityRouter(refresh_s=0)])
    try:
        for configured, bound in ((None, "127.0.0.1"), ("127.0.0.2", "127.0.0.2")):
            if configured:
                monkeypatch.setenv("FRAMEFLOW_HEALTH_HOST", configured)
            jobs = PipelineScheduler(broker, interval_s=60)
            try:
                port = jobs.serve_metrics(0)
                assert jobs._metrics_server is not None and jobs._metrics_server._server is not None
                assert jobs._metrics_server._server.server_address[0] == bound
                assert "frameflow_redis_up" in http_get(f"http://{bound}:{port}/metrics")
            finally:
                jobs.stop()
    finally:
        broker.close()


#: Modules that turn bytes into code or objects: never in frameflow.
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}


def _frameflow_sources() -> list[Path]:
    return sorted(path for package in ("pipeline", "middleware", "workers") for path in (ROOT / package).rglob("*.py"))


def test_no_frameflow_module_uses_pickle() -> None:
    sources = _frameflow_sources()
    assert len(sources) > 40
    found = []
    for path in sources:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0], *(alias.name for alias in node.names)]
            elif isinstance(node, ast.Name | ast.Attribute):
                names = [node.id if isinstance(node, ast.Name) else node.attr]
            elif isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                safe = any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in node.keywords)
                names = [] if safe else ["torch.load without weights_only=True"]
            bad = [name for name in names if name in UNSAFE_MODULES or name in ("PickleEncoder", "torch.load")]
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in bad]  # type: ignore[attr-defined]
    assert found == []


def test_the_broker_speaks_json(broker: RedisStreamsBroker, redis_client: redis.Redis) -> None:
    assert isinstance(dramatiq.get_encoder(), dramatiq.JSONEncoder)

    @dramatiq.actor(queue_name="default", broker=broker)
    def remember(value: str) -> None:  # never runs: no worker here
        raise AssertionError(value)

    remember.send("hello")
    [(_, fields)] = redis_client.xrange(broker.keys_for("default").stream)
    envelope = json.loads(fields[ENVELOPE_FIELD.encode()])
    assert envelope["args"] == ["hello"] and envelope["actor_name"] == "remember"


def test_a_pickled_payload_is_a_dead_letter_not_code(
    broker: RedisStreamsBroker, worker: dramatiq.Worker, redis_client: redis.Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "pickle-ran"
    done: list[str] = []

    @dramatiq.actor(queue_name="default", broker=broker)
    def remember(value: str) -> None:
        done.append(value)

    class Exploit:
        def __reduce__(self) -> tuple:
            return (os.mkdir, (str(marker),))

    stream = broker.keys_for("default").stream
    for payload in (pickle.dumps(Exploit()), base64.b64encode(pickle.dumps(Exploit()))):
        redis_client.xadd(stream, {ENVELOPE_FIELD: payload})
    remember.send("after the pickles")
    wait_for(lambda: done == ["after the pickles"], what="the worker to go on after the pickles")
    dead = broker.dead_letter_queue("default")
    letters = wait_for(lambda: len(dead) == 2 and dead.list(), what="two dead letters")
    reasons = [letter.reason for letter in letters]
    assert len(reasons) == 2 and all(
        reason.startswith("malformed entry: the 'message' field is not valid JSON") for reason in reasons
    ), reasons
    assert not marker.exists()


# -- 4. the registration allow-list -------------------------------------------------------------
def test_a_processor_outside_the_allow_list_cannot_start(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FRAMEFLOW_ALLOWED_PROCESSORS", "face-*, objects-1")
    intruder = RecordingProcessor("intruder-1", ["face_detection"], redis_url)
    with (
        caplog.at_level(logging.ERROR, logger="pipeline.processes.processor"),
        pytest.raises(RegistrationRefused) as refused,
        running(intruder, redis_client, timeout=5),
    ):
        pass
    assert refused.value.processor_id == "intruder-1"
    assert str(refused.value) == (
        "processor 'intruder-1' may not register: FRAMEFLOW_ALLOWED_PROCESSORS allows only face-*, objects-1"
    )
    assert [record.getMessage() for record in caplog.records] == [f"Registration refused: {refused.value}."]
    assert ProcessorRegistry(redis_client).known_ids() == []
    assert not redis_client.exists("frames:ready:intruder-1")

    with running(RecordingProcessor("face-2", ["face_detection"], redis_url), redis_client):
        assert ProcessorRegistry(redis_client).known_ids() == ["face-2"]


def test_a_refused_worker_process_exits_non_zero_saying_why(redis_url: str, redis_client: redis.Redis) -> None:
    env = worker_env(redis_url, lease_ms=2000, max_deliveries=3, FRAMEFLOW_ALLOWED_PROCESSORS="face-*,objects-1")
    refused = run_all(
        {
            "frameflow worker": [*FRAMEFLOW, "worker", "workers.sample"],
            "dramatiq": [sys.executable, "-m", "dramatiq", "pipeline.broker", "workers.sample", "-p1", "-t1"],
        },
        env,
    )
    worker = refused["frameflow worker"]
    assert worker.returncode == 1
    expected = "processor 'sample-1' may not register: FRAMEFLOW_ALLOWED_PROCESSORS allows only face-*, objects-1"
    assert worker.stderr.splitlines()[-1] == f"Error: {expected}"
    assert "Traceback" not in worker.stderr
    assert refused["dramatiq"].returncode != 0
    assert expected in refused["dramatiq"].stderr
    assert ProcessorRegistry(redis_client).known_ids() == []


def test_the_registry_refuses_and_ignores_ids_outside_the_allow_list(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    register_fake(redis_client, "evil-1", ("face_detection",))  # written by someone with Redis access
    register_fake(redis_client, "face-1", ("face_detection",))
    monkeypatch.setenv("FRAMEFLOW_ALLOWED_PROCESSORS", "face-*")
    registry = ProcessorRegistry(redis_client)
    with pytest.raises(RegistrationRefused):
        register_fake(redis_client, "evil-2", ("face_detection",))
    with caplog.at_level(logging.WARNING, logger="pipeline.domain.registry"):
        assert [info.processor_id for info in registry.list(include_dead=True)] == ["face-1"]
        assert [info.processor_id for info in registry.list()] == ["face-1"]
    assert [record.getMessage() for record in caplog.records] == [
        "Ignoring the registry entry of 'evil-1': FRAMEFLOW_ALLOWED_PROCESSORS does not allow it "
        "(written to Redis without registering?)."
    ]
    producer = FrameProducer(redis_url)
    try:
        targets = [publish(producer, ["face_detection"], image=IMAGE).targets for _ in range(5)]
    finally:
        producer.close()
    assert targets == [("face-1",)] * 5  # the router never sends a frame to the entry it ignores
    assert ProcessorRegistry(redis_client, allowed=()).get("evil-1") is not None  # still in Redis: not deleted


def test_without_an_allow_list_any_id_registers(redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAMEFLOW_ALLOWED_PROCESSORS", raising=False)
    register_fake(redis_client, "anything-1", ("x",))
    assert ProcessorRegistry(redis_client).known_ids() == ["anything-1"]
