"""The hot path's own connections (pipeline/streams/direct.py)."""

from __future__ import annotations

import os

import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.retry import Retry

from pipeline.streams.connection import connect
from pipeline.streams.direct import DirectRedis
from pipeline.streams.embedded import free_port


@pytest.fixture
def direct(redis_url: str, redis_client: redis.Redis):
    direct = DirectRedis(connect(redis_url))
    yield direct
    direct.close()


def test_commands_run_in_one_round_trip_with_replies_in_order(direct: DirectRedis, redis_client) -> None:
    replies = direct.execute_many([("SET", "a", "1"), ("INCR", "a"), ("GET", "a")])
    assert replies == [b"OK", 2, b"2"]
    assert direct.execute("XADD", "s", "*", "field", b"value").count(b"-") == 1
    assert redis_client.xlen("s") == 1


def test_an_error_reply_is_a_value_in_a_batch_and_raised_alone(direct: DirectRedis, redis_client) -> None:
    redis_client.set("text", "x")
    replies = direct.execute_many([("INCR", "counter"), ("XADD", "text", "*", "a", "b"), ("INCR", "counter")])
    assert replies[0] == 1 and replies[2] == 2
    assert isinstance(replies[1], ResponseError) and "WRONGTYPE" in str(replies[1])
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        direct.execute("XADD", "text", "*", "a", "b")
    assert direct.execute("PING") in (b"PONG", "PONG")  # the connection is still in step


def test_a_batch_whose_replies_span_many_socket_reads_comes_back_whole_and_in_order(direct: DirectRedis) -> None:
    values = [os.urandom(64 * 1024) for _ in range(3)]
    direct.execute_many([("SET", f"big-{index}", value) for index, value in enumerate(values)])
    commands = [("GET", f"big-{index % 3}") for index in range(60)] + [("INCR", "counter")]
    replies = direct.execute_many(commands)
    assert replies[:-1] == [values[index % 3] for index in range(60)] and replies[-1] == 1


def test_a_script_redis_forgot_is_loaded_again(direct: DirectRedis, redis_client) -> None:
    script = redis_client.register_script("return redis.call('INCR', KEYS[1])")
    redis_client.script_flush()
    replies = direct.execute_many(
        [("EVALSHA", script.sha, 1, "n"), ("EVALSHA", script.sha, 1, "n")], {script.sha: script}
    )
    assert replies == [1, 2]


def test_a_dropped_connection_is_reconnected_and_the_command_retried(direct: DirectRedis, redis_client) -> None:
    direct.execute("PING")
    for client in redis_client.client_list():
        if client.get("cmd") == "ping":
            redis_client.client_kill_filter(_id=client["id"])
    assert direct.execute("INCR", "after") == 1


def test_a_round_trip_that_keeps_failing_is_tried_as_often_as_the_retry_policy_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A send's first attempt runs outside the policy; the policy still counts it as its first.
    client = redis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 2))
    direct = DirectRedis(client)
    writes = []
    write = DirectRedis._write

    def counted(connection, packed: list[bytes]) -> None:
        writes.append(packed)
        write(connection, packed)

    monkeypatch.setattr(DirectRedis, "_write", staticmethod(counted))
    with pytest.raises(RedisConnectionError):
        direct.execute("XADD", "s", "*", "f", "v")
    assert len(writes) == 3  # the first attempt and the policy's 2 retries
    with pytest.raises(RedisConnectionError):
        direct.receive(direct.send([("PING",)]))
    assert len(writes) == 6


def test_each_concurrent_caller_gets_a_connection_of_its_own(direct: DirectRedis) -> None:
    first = direct._take()
    second = direct._take()
    assert first is not second
    direct._give_back(first)
    assert direct._take() is first


def test_a_forked_child_never_uses_its_parents_connections(direct: DirectRedis) -> None:
    direct.execute("PING")
    parents = direct._idle[-1]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = direct._take() is not parents and direct.execute("PING") in (b"PONG", "PONG")
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert direct._take() is parents  # the parent's own is still there for it
