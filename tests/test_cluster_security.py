"""TLS and the least-privilege ACL user on a Redis Cluster and through Sentinel (issue 21, item 5).

The cluster is three TLS-only masters (``--tls-cluster yes``: the bus too) whose ``default``
user has an admin password the pipeline never sees; frameflow runs as the user
:data:`~pipeline.streams.embedded.PIPELINE_ACL_RULES` + :data:`~pipeline.streams.embedded.CLUSTER_ACL_RULES`
allow, in real processes (a scheduler, a processor run the seed's way, a camera, the CLI's
views), all at ``--debug``. The Sentinel set-up is a TLS master and a TLS sentinel with a
password of its own, frameflow being a least-privilege user on both
(:data:`~pipeline.streams.embedded.SENTINEL_ACL_RULES` on the sentinel). Every server's ACL
log says whether a command of frameflow's user was refused.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import redis

from pipeline import FrameProducer
from pipeline.settings import mask_url
from pipeline.streams.connection import connect
from pipeline.streams.embedded import CLUSTER_ACL_RULES, PIPELINE_ACL_RULES, SENTINEL_ACL_RULES, AclUser
from tests.cli_harness import COLUMNS, FRAMEFLOW
from tests.cluster import LocalCluster
from tests.polling import wait_until
from tests.processes import WorkerProcess, worker_env
from tests.processor_harness import RecordingProcessor, publish, running, wait_for
from tests.sentinel import LocalSentinel
from tests.tls import USER, Certificates, captured_logs, run_all, tls_redis_server

FRAMES = 10
RESULTS = "samples:processed"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates.make(tmp_path_factory.mktemp("tls"))


@dataclasses.dataclass
class SecureCluster:
    cluster: LocalCluster
    user: AclUser

    @property
    def url(self) -> str:
        """frameflow's URL: ``rediss+cluster://frameflow:PASSWORD@...?ssl_ca_certs=CA``."""
        return self.cluster.url_as(_credentials(self.user))

    def acl_refusals(self) -> list[dict[str, object]]:
        """Every master's ACL log entries for frameflow's user (a command or key it was refused)."""
        entries = []
        for index in range(len(self.cluster.nodes)):
            with self.cluster.node_client(index) as client:
                entries += [entry for entry in client.acl_log() if entry.get("username") == self.user.name]
        return entries


@pytest.fixture(scope="module")
def secure_cluster(certificates: Certificates) -> Iterator[SecureCluster]:
    admin = secrets.token_urlsafe(24)
    with LocalCluster(
        tls_redis_server(), tls=certificates.server_tls(), extra_args=["--requirepass", admin]
    ) as cluster:
        user = AclUser(USER, secrets.token_urlsafe(24), PIPELINE_ACL_RULES + CLUSTER_ACL_RULES)
        cluster.add_user(user)
        yield SecureCluster(cluster, user)


@dataclasses.dataclass
class ClusterRun:
    printed: dict[str, str] = dataclasses.field(default_factory=dict)
    exit_codes: dict[str, int] = dataclasses.field(default_factory=dict)
    results: list[dict[bytes, bytes]] = dataclasses.field(default_factory=list)


@pytest.fixture(scope="module")
def cluster_run(secure_cluster: SecureCluster, tmp_path_factory: pytest.TempPathFactory) -> ClusterRun:
    """The pipeline over the TLS cluster as frameflow's user, in real processes, everything printed kept."""
    logs = tmp_path_factory.mktemp("cluster-run")
    run = ClusterRun()
    env = worker_env(secure_cluster.url, lease_ms=2000, max_deliveries=3, COLUMNS=str(COLUMNS))
    processes = {
        "scheduler": [*FRAMEFLOW, "--debug", "scheduler", "--interval", "0.3", "--metrics-port", "0"],
        "worker": [*FRAMEFLOW, "--debug", "worker", "workers.sample"],
    }
    started = {
        name: WorkerProcess(command, {**env, "PROCESSOR_ID": "sample-tls"}, logs / f"{name}.log")
        for name, command in processes.items()
    }
    client = connect(secure_cluster.url)
    try:
        wait_until(
            lambda: client.exists("frameflow:processor:sample-tls"),
            60,
            lambda: "the processor to register: " + started["worker"].log_tail(10),
        )
        count = str(FRAMES)
        camera = [*FRAMEFLOW, "--debug", "enqueue", "--capability", "sample", "--count", count, "--rate", "100"]
        for name, result in run_all({"enqueue": camera}, env).items():
            run.printed[name], run.exit_codes[name] = result.stdout + result.stderr, result.returncode
        wait_until(lambda: client.xlen(RESULTS) >= FRAMES, 60, "every frame's result on the cluster")
        run.results = [fields for _, fields in client.xrange(RESULTS)]
        views = {name: [*FRAMEFLOW, "--debug", *name.split()] for name in ("processors", "queues", "top --once")}
        for name, result in run_all(views, env).items():
            run.printed[name], run.exit_codes[name] = result.stdout + result.stderr, result.returncode
    finally:
        for name, process in started.items():
            run.exit_codes[name] = process.stop()
            run.printed[name] = process.log_path.read_text(errors="replace")
        client.close()
    return run


# -- the cluster ---------------------------------------------------------------------------------
def test_frames_flow_on_a_tls_cluster_as_the_least_privileged_user(
    cluster_run: ClusterRun, secure_cluster: SecureCluster
) -> None:
    assert cluster_run.exit_codes["enqueue"] == 0, cluster_run.printed["enqueue"][-2000:]
    assert len({fields[b"frame_id"] for fields in cluster_run.results}) == FRAMES
    assert {fields[b"processor_id"] for fields in cluster_run.results} == {b"sample-tls"}
    for name in ("processors", "queues", "top --once"):
        assert cluster_run.exit_codes[name] == 0, cluster_run.printed[name][-2000:]
    assert "sample-tls" in cluster_run.printed["processors"]
    # Both long-running processes stopped cleanly (SIGTERM) after working over TLS.
    assert cluster_run.exit_codes["worker"] == 0, cluster_run.printed["worker"][-2000:]
    assert cluster_run.exit_codes["scheduler"] == 0, cluster_run.printed["scheduler"][-2000:]


def test_the_cluster_refused_no_command_of_the_user(cluster_run: ClusterRun, secure_cluster: SecureCluster) -> None:
    # The rules are enough for everything that ran: no master logged a refusal for frameflow's user.
    assert secure_cluster.acl_refusals() == []


def test_the_cluster_users_password_is_never_printed(cluster_run: ClusterRun, secure_cluster: SecureCluster) -> None:
    for source, text in cluster_run.printed.items():
        assert secure_cluster.user.password not in text, source
        assert quote(secure_cluster.user.password, safe="") not in text, source


def test_a_user_without_cluster_slots_is_refused_in_one_line(secure_cluster: SecureCluster) -> None:
    rules = tuple(rule for rule in PIPELINE_ACL_RULES + CLUSTER_ACL_RULES if rule not in CLUSTER_ACL_RULES)
    lacking = AclUser("frameflow-lacking", secrets.token_urlsafe(24), rules)
    secure_cluster.cluster.add_user(lacking)
    url = secure_cluster.cluster.url_as(_credentials(lacking))
    env = worker_env(url, lease_ms=2000, max_deliveries=3)
    result = run_all({"processors": [*FRAMEFLOW, "processors"]}, env)["processors"]
    assert result.returncode == 1
    [line] = result.stderr.splitlines()  # one line, no traceback
    assert line.startswith(f"Error: Redis at {mask_url(url)} refused a command frameflow needs"), line
    assert "'cluster|slots'" in line and "+cluster|slots" in line, line
    assert lacking.password not in result.stdout + result.stderr
    # The masters' ACL log has it too (and so the empty log of the run above means something).
    assert {entry["object"] for entry in SecureCluster(secure_cluster.cluster, lacking).acl_refusals()} == {
        "cluster|slots"
    }


# -- Sentinel ------------------------------------------------------------------------------------
@dataclasses.dataclass
class SecureSentinel:
    sentinel: LocalSentinel
    user: AclUser
    sentinel_user: AclUser

    def url(self, sentinel_user: AclUser | None = None) -> str:
        return self.sentinel.url_as(_credentials(self.user), sentinel_user=sentinel_user or self.sentinel_user)


@pytest.fixture(scope="module")
def secure_sentinel(certificates: Certificates) -> Iterator[SecureSentinel]:
    with LocalSentinel(
        tls_redis_server(),
        tls=certificates.server_tls(),
        password=secrets.token_urlsafe(24),
        sentinel_password=secrets.token_urlsafe(24),
    ) as sentinel:
        user = AclUser(USER, secrets.token_urlsafe(24))
        sentinel_user = AclUser("frameflow-sentinel", secrets.token_urlsafe(24), SENTINEL_ACL_RULES)
        sentinel.add_user(user)
        sentinel.add_sentinel_user(sentinel_user)
        yield SecureSentinel(sentinel, user, sentinel_user)


def test_frames_flow_through_tls_sentinels_with_their_own_user(secure_sentinel: SecureSentinel) -> None:
    url = secure_sentinel.url()
    with captured_logs() as logs:
        processor = RecordingProcessor("sentinel-tls", ["sentinel"], url)
        with running(processor, connect(url)):  # type: ignore[arg-type]
            producer = FrameProducer(url)
            try:
                frame_id = publish(producer, ["sentinel"]).frame_id
            finally:
                producer.close()
            wait_for(lambda: processor.frame_ids() == [frame_id], what="the frame through the sentinel's master")
            cli = run_all(
                {"processors": [*FRAMEFLOW, "--debug", "processors"]},
                worker_env(url, lease_ms=2000, max_deliveries=3, COLUMNS=str(COLUMNS)),
            )["processors"]
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "sentinel-tls" in cli.stdout
    printed = logs.getvalue() + cli.stdout + cli.stderr
    for password in (secure_sentinel.user.password, secure_sentinel.sentinel_user.password):
        assert password not in printed
    with secure_sentinel.sentinel.sentinel_client() as client:  # the sentinel refused nothing
        assert [e for e in client.acl_log() if e.get("username") == secure_sentinel.sentinel_user.name] == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong sentinel password", "refused the credentials"),
        ("sentinel user without SENTINEL MASTERS", "refused a command frameflow needs"),
    ],
)
def test_a_sentinel_that_refuses_is_one_clear_line(secure_sentinel: SecureSentinel, case: str, expected: str) -> None:
    if case == "wrong sentinel password":
        refused = dataclasses.replace(secure_sentinel.sentinel_user, password="WRONG-" + secrets.token_urlsafe(8))
    else:
        refused = AclUser("frameflow-sentinel-lacking", secrets.token_urlsafe(24), ("-@all", "+ping"))
        secure_sentinel.sentinel.add_sentinel_user(refused)
    url = secure_sentinel.url(refused)
    env = worker_env(url, lease_ms=2000, max_deliveries=3)
    # Told to wait 30 s for Redis, it does not: every sentinel answered, and said no.
    result = run_all({"processors": [*FRAMEFLOW, "--wait-for-redis", "30", "processors"]}, env)["processors"]
    assert result.returncode == 1
    [line] = result.stderr.splitlines()  # one line, at once: waiting would not change the answer
    assert line.startswith(f"Error: the sentinels of {mask_url(url)} {expected}"), line
    assert refused.password not in line and secure_sentinel.user.password not in line


def test_sentinel_passwords_in_urls_are_masked() -> None:
    url = "rediss+sentinel://frameflow:pw1@h:26379/cameras/0?ssl_ca_certs=/ca.pem&sentinel_username=s&sentinel_password=pw2"
    masked = mask_url(url)
    assert masked == (
        "rediss+sentinel://frameflow:***@h:26379/cameras/0?ssl_ca_certs=/ca.pem&sentinel_username=s&sentinel_password=***"
    )
    assert (
        mask_url("redis+sentinel://h/cameras?sentinel_password=pw2")
        == "redis+sentinel://h/cameras?sentinel_password=***"
    )


def test_a_sentinel_password_reaches_the_sentinels_not_the_master() -> None:
    client = connect("redis+sentinel://u:master-pw@127.0.0.1:1/cameras/0?sentinel_username=s&sentinel_password=s-pw")
    assert isinstance(client, redis.Redis)
    pool = client.connection_pool
    assert (pool.connection_kwargs["username"], pool.connection_kwargs["password"]) == ("u", "master-pw")
    assert "sentinel_password" not in pool.connection_kwargs
    sentinel_kwargs = pool.sentinel_manager.sentinel_kwargs  # type: ignore[attr-defined]
    assert (sentinel_kwargs["username"], sentinel_kwargs["password"]) == ("s", "s-pw")
    client.close()


def _credentials(user: AclUser) -> str:
    return f"{quote(user.name, safe='')}:{quote(user.password, safe='')}@"
