"""The hot path's connections when a primary stops answering or comes back demoted (pipeline/streams/direct.py).

A paused primary (SIGSTOP: a network partition as its clients see it) keeps its
connections open and answers nothing: a round trip must fail within a bounded time,
whatever ``socket_timeout`` the client has (redis-py before 8 has none), so that the
retry moves on. A round trip that asks Redis to block (``XREADGROUP ... BLOCK``) waits
that long on top. And after a failover, an idle connection must not write to an old
primary that is a master again before the sentinels demote it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.streams import direct as direct_module
from pipeline.streams.connection import connect
from pipeline.streams.direct import DirectRedis
from pipeline.streams.embedded import EmbeddedRedis
from tests.cluster import cluster_server_binary
from tests.failover_harness import pause, resume
from tests.sentinel import LocalSentinel

#: A short read timeout for these tests (the default is 5 s).
READ_TIMEOUT_S = 0.5


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def untimed(server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch) -> Iterator[DirectRedis]:
    """A DirectRedis of a client without a socket timeout and without retries."""
    monkeypatch.setattr(direct_module, "READ_TIMEOUT_S", READ_TIMEOUT_S)
    client = redis.Redis.from_url(server.url, socket_timeout=None, retry=Retry(NoBackoff(), 0))
    direct = DirectRedis(client)
    yield direct
    direct.close()
    client.close()


def test_a_round_trip_to_a_paused_redis_fails_instead_of_waiting_for_it(server, untimed) -> None:
    untimed.execute("PING")  # an open connection, as the hot path keeps them
    outcome: list[BaseException | object] = []
    call = threading.Thread(target=lambda: outcome.append(_outcome(untimed, "INCR", "n")), daemon=True)
    pause(server)
    try:
        call.start()
        call.join(30)
        assert not call.is_alive(), "the round trip waited for the paused Redis"
    finally:
        resume(server)
    assert isinstance(outcome[0], redis.TimeoutError), outcome


def test_a_blocking_read_waits_its_block_time_beyond_the_read_timeout(server) -> None:
    client = redis.Redis.from_url(server.url, socket_timeout=READ_TIMEOUT_S, retry=Retry(NoBackoff(), 0))
    direct = DirectRedis(client)
    try:
        direct.execute("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM")
        block_ms = int(READ_TIMEOUT_S * 3000)
        read = ("XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "BLOCK", block_ms, "STREAMS", "s", ">")
        assert direct.execute(*read) is None  # an empty read after the block time, not a timeout
    finally:
        direct.close()
        client.close()


def test_an_idle_connection_never_writes_to_an_old_primary_that_is_a_master_again() -> None:
    """The sentinels name a new master while an idle connection is open to the old one, which is
    still a master (as a partitioned primary is between its return and its demotion): once the
    client learned of the new master, the idle connection goes there."""
    binary = cluster_server_binary()
    if binary is None:
        pytest.fail("this test needs redis-server 7 (apt-get install redis-server, or set FRAMEFLOW_REDIS_SERVER)")
    with LocalSentinel(binary, replicas=1) as sentinel:
        client = connect(sentinel.url())
        direct = DirectRedis(client)
        replica = sentinel.replicas[0]
        try:
            direct.execute("SET", "before", 1)  # an idle connection to the primary now
            with sentinel.server_client(sentinel.master) as old, sentinel.server_client(replica) as new:
                new.execute_command("REPLICAOF", "NO", "ONE")
                with sentinel.sentinel_client() as watcher:  # the sentinels' new master, the old one untouched
                    watcher.execute_command("SENTINEL", "REMOVE", sentinel.service)
                    watcher.execute_command("SENTINEL", "MONITOR", sentinel.service, "127.0.0.1", replica.port, 1)
                client.connection_pool.get_master_address()  # what any of the client's connections learns on connect
                direct.execute("SET", "after", 1)
                assert new.get("after") == b"1"
                assert old.get("after") is None, "the idle connection wrote to the old primary"
        finally:
            direct.close()
            client.close()


def _outcome(direct: DirectRedis, *command: object) -> BaseException | object:
    try:
        return direct.execute(*command)
    except BaseException as error:  # the test looks at it
        return error
