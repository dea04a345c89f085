"""frameflow on a Redis Cluster: three masters started for the session (:mod:`tests.cluster`).

The broker's, the router's and the registry's own tests run on the cluster too
(``FRAMEFLOW_TEST_REDIS_CLUSTER=1``, see :mod:`tests.conftest`); this module holds
what is particular to a cluster: URLs, the hot path split by master, a slot that
moves under a running client, frames that fan out to queues on different
masters, and a frame's whole trip from a producer to a processor's result.
"""

from __future__ import annotations

import base64
import concurrent.futures
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError
from redis.sentinel import SentinelConnectionPool

from pipeline import FrameProducer, RedisStreamsBroker
from pipeline.domain.keys import counts_key
from pipeline.domain.results import wait_for_results
from pipeline.errors import RedisUnreachable
from pipeline.settings import mask_url
from pipeline.streams.cluster import ClusterDirectRedis
from pipeline.streams.connection import connect, parse_multi_host_url, wait_until_reachable
from pipeline.streams.keys import queue_keys
from tests.cluster import LocalCluster, cluster_server_binary
from tests.polling import wait_until
from tests.sentinel import LocalSentinel

from .processor_harness import IMAGE, RecordingProcessor, publish, running, wait_for

FACE, OBJECT = "face_detection", "object_detection"


@pytest.fixture
def cluster_client(redis_cluster: LocalCluster) -> Iterator[RedisCluster]:
    client = connect(redis_cluster.url)
    assert isinstance(client, RedisCluster)
    client.flushdb()  # every master
    yield client
    client.close()


@pytest.fixture
def direct(cluster_client: RedisCluster) -> Iterator[ClusterDirectRedis]:
    direct = ClusterDirectRedis(cluster_client)
    yield direct
    direct.close()


def master_of(cluster: LocalCluster, client: RedisCluster, key: str) -> int:
    return cluster.owner_of(client.keyslot(key))


def ids_on_different_masters(cluster: LocalCluster, client: RedisCluster, prefix: str, count: int) -> list[str]:
    """``count`` processor ids whose queues live on ``count`` different masters."""
    chosen: dict[int, str] = {}
    for number in range(1, 200):
        processor_id = f"{prefix}-{number}"
        stream = queue_keys("frameflow", f"frames.ready.{processor_id}").stream
        chosen.setdefault(master_of(cluster, client, stream), processor_id)
        if len(chosen) == count:
            return list(chosen.values())
    raise AssertionError(f"no {count} ids of {prefix!r} on different masters")


# -- URLs -----------------------------------------------------------------------------------------


def test_a_cluster_url_names_its_startup_nodes() -> None:
    parsed = parse_multi_host_url("rediss+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2,[::1]:7002/?ssl_cert_reqs=none")
    assert parsed is not None and parsed.kind == "cluster"
    assert parsed.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert parsed.node_url == "rediss://app:s3cret@10.0.0.1:7000/0?ssl_cert_reqs=none"


def test_a_sentinel_url_names_the_service_and_database() -> None:
    parsed = parse_multi_host_url("redis+sentinel://:pw@s1:26379,s2/cameras/2")
    assert parsed is not None and parsed.kind == "sentinel"
    assert parsed.hosts == (("s1", 26379), ("s2", 26379))
    assert (parsed.service, parsed.db) == ("cameras", 2)


def test_plain_urls_are_left_to_redis_py() -> None:
    assert parse_multi_host_url("redis://localhost:6379/0") is None
    assert parse_multi_host_url("unix:///run/redis.sock") is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://s1:26379/", "names the master's service"),
        ("redis+cluster://a:7000/3", "only database 0"),
        ("redis+cluster:///", "at least one host"),
        ("redis+cluster://a:port/", "bad host:port"),
    ],
)
def test_malformed_cluster_and_sentinel_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_multi_host_url(url)


def test_a_sentinel_url_gives_a_client_of_the_master_the_sentinels_name() -> None:
    client = connect("redis+sentinel://camera:s3cret@127.0.0.1:26379,127.0.0.1:26380/cameras/2")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "cameras"
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in pool.sentinel_manager.sentinels] == [("127.0.0.1", 26379), ("127.0.0.1", 26380)]  # fmt: skip
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("camera", "s3cret", 2)
    assert pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs["password"] is None


def test_a_sentinel_url_reaches_the_master_its_sentinel_names() -> None:
    binary = cluster_server_binary()
    if binary is None:
        pytest.fail("a Sentinel needs redis-server 7 (apt-get install redis-server, or set FRAMEFLOW_REDIS_SERVER)")
    with LocalSentinel(binary, password="s3cret") as sentinel:
        wait_until_reachable(sentinel.url(db=3), timeout_s=10)
        client = connect(sentinel.url(db=3))
        client.set("where", "master")
        assert client.connection_pool.get_master_address() == ("127.0.0.1", sentinel.master.port)
        with redis.Redis(port=sentinel.master.port, password="s3cret", db=3) as master:
            assert master.get("where") == b"master"
        client.close()


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis+cluster://app:s3cret@a:7000,b:7001/", "redis+cluster://app:***@a:7000,b:7001/"),
        ("rediss+sentinel://:s3cret@s1:26379,s2:26379/cameras/0", "rediss+sentinel://:***@s1:26379,s2:26379/cameras/0"),
        ("redis+cluster://a:7000,b:7001/", "redis+cluster://a:7000,b:7001/"),
    ],
)
def test_passwords_in_host_lists_are_masked(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_an_unreachable_cluster_is_reported_with_its_url_masked() -> None:
    with pytest.raises(RedisUnreachable) as raised:
        wait_until_reachable("redis+cluster://:s3cret@127.0.0.1:1,127.0.0.1:2/", timeout_s=0.3)
    assert "cannot reach Redis at redis+cluster://:***@127.0.0.1:1,127.0.0.1:2/" in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_a_cluster_that_refuses_the_credentials_says_so(redis_cluster: LocalCluster) -> None:
    wait_until_reachable(redis_cluster.url)
    url = redis_cluster.url.replace("redis+cluster://", "redis+cluster://bob:s3cret@")
    with pytest.raises(RedisUnreachable, match="refused the credentials") as raised:
        wait_until_reachable(url)
    assert "s3cret" not in str(raised.value)


# -- the key layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("queue_name", ["default", "frames.ready.face-1", "frames.ready.objects-9"])
def test_a_queue_and_its_companion_keys_share_one_slot(queue_name: str) -> None:
    keys = [*queue_keys("frameflow", queue_name), counts_key("frameflow", queue_name)]
    assert len({key_slot(key.encode()) for key in keys}) == 1


# -- the hot path, split by master -------------------------------------------------------------------


def test_a_batch_over_every_master_comes_back_in_order(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, direct: ClusterDirectRedis
) -> None:
    keys = [f"counter-{number}" for number in range(30)]
    assert len({master_of(redis_cluster, cluster_client, key) for key in keys}) == 3
    commands = [command for key in keys for command in (("SET", key, "1"), ("INCR", key))]
    replies = direct.execute_many([*commands, *(("GET", key) for key in keys)])
    assert replies == [b"OK", 2] * len(keys) + [b"2"] * len(keys)
    for key in keys:  # each key was written on the master that owns its slot
        with redis_cluster.node_client(master_of(redis_cluster, cluster_client, key)) as node:
            assert node.get(key) == b"2"


def test_a_batch_is_in_flight_on_every_master_at_once(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, direct: ClusterDirectRedis
) -> None:
    # One BLPOP per master, each blocking until its list gets an item: sent one master after
    # another, the second would not even be written while the first blocks.
    lists = {master_of(redis_cluster, cluster_client, f"list-{number}"): f"list-{number}" for number in range(30)}
    assert len(lists) == 3
    batch = [("BLPOP", key, 60) for key in lists.values()]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        replies = pool.submit(direct.execute_many, batch)
        try:

            def blocked() -> list[int]:
                counts = []
                for index in range(3):
                    with redis_cluster.node_client(index) as node:
                        counts.append(node.info("clients")["blocked_clients"])
                return counts

            wait_until(lambda: blocked() == [1, 1, 1], 30, lambda: f"a BLPOP blocked on every master ({blocked()})")
        finally:
            for key in lists.values():
                cluster_client.rpush(key, "go")
        assert replies.result(timeout=60) == [[key.encode(), b"go"] for key in lists.values()]


def test_a_master_whose_connection_dropped_is_retried_alone(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, direct: ClusterDirectRedis
) -> None:
    keys = [f"dropped-{number}" for number in range(30)]
    assert direct.execute_many([("INCR", key) for key in keys]) == [1] * len(keys)
    with redis_cluster.node_client(1) as node:  # the hot path's idle connection to master 1 goes away
        for client in node.client_list():
            if client.get("cmd") == "incr":
                node.client_kill_filter(_id=client["id"])
    assert direct.execute_many([("INCR", key) for key in keys]) == [2] * len(keys)


def test_error_replies_are_values_in_a_batch_and_raised_alone(
    cluster_client: RedisCluster, direct: ClusterDirectRedis
) -> None:
    cluster_client.set("text", "x")
    replies = direct.execute_many([("INCR", "a"), ("XADD", "text", "*", "f", "v"), ("INCR", "b")])
    assert replies[0] == 1 and replies[2] == 1
    assert isinstance(replies[1], ResponseError) and "WRONGTYPE" in str(replies[1])
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        direct.execute("XADD", "text", "*", "f", "v")


def test_a_transaction_travels_whole_to_its_master(cluster_client: RedisCluster, direct: ClusterDirectRedis) -> None:
    replies = direct.execute_many(
        [
            ("INCR", "before"),
            ("MULTI",),
            ("XADD", "{q}", "*", "f", "1"),
            ("INCR", "frameflow:counts:{q}"),
            ("EXEC",),
            ("INCR", "after"),
        ]
    )
    assert replies[0] == 1 and replies[5] == 1
    assert replies[1] == b"OK" and replies[2:4] == [b"QUEUED", b"QUEUED"]
    assert replies[4][1] == 1 and cluster_client.xlen("{q}") == 1


def test_scripts_a_master_forgot_are_loaded_again(cluster_client: RedisCluster, direct: ClusterDirectRedis) -> None:
    script = cluster_client.register_script("return redis.call('INCR', KEYS[1])")
    cluster_client.script_flush()  # every master
    commands = [("EVALSHA", script.sha, 1, f"n-{number}") for number in range(9)]
    assert direct.execute_many(commands, {script.sha: script}) == [1] * 9


def test_a_blocking_read_goes_to_the_master_of_its_stream(
    cluster_client: RedisCluster, direct: ClusterDirectRedis
) -> None:
    cluster_client.xgroup_create("frames:ready:x", "workers", id="0", mkstream=True)
    cluster_client.xadd("frames:ready:x", {"f": "v"})
    reply = direct.execute(
        "XREADGROUP", "GROUP", "workers", "c", "COUNT", 1, "BLOCK", 100, "STREAMS", "frames:ready:x", ">"
    )
    streams = reply if isinstance(reply, dict) else dict(reply)  # RESP3 or RESP2
    [[_, fields]] = streams[b"frames:ready:x"]
    assert fields == [b"f", b"v"]


def test_a_slot_that_moved_is_followed(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, direct: ClusterDirectRedis
) -> None:
    key = "frames:ready:moving"
    slot = cluster_client.keyslot(key)
    source = redis_cluster.owner_of(slot)
    target = (source + 1) % 3
    assert direct.execute("XADD", key, "*", "n", "1")
    redis_cluster.migrate_slot(slot, source, target)
    try:
        # This client's map still names the old master, which answers MOVED.
        assert cluster_client.nodes_manager.get_node_from_slot(slot).port == redis_cluster.nodes[source].port
        replies = direct.execute_many([("XADD", key, "*", "n", "2"), ("MULTI",), ("XLEN", key), ("EXEC",)])
        assert replies[3] == [2]
        assert cluster_client.nodes_manager.get_node_from_slot(slot).port == redis_cluster.nodes[target].port
    finally:
        redis_cluster.migrate_slot(slot, target, source)


def test_the_broker_keeps_delivering_when_its_queue_moves(redis_cluster: LocalCluster, cluster_client) -> None:
    broker = RedisStreamsBroker(redis_cluster.url, lease_ms=1000)
    assert isinstance(broker.direct, ClusterDirectRedis)
    done: list[int] = []

    @dramatiq.actor(broker=broker, queue_name="moving")
    def record(value: int) -> None:
        done.append(value)

    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    slot = cluster_client.keyslot("moving")
    source = redis_cluster.owner_of(slot)
    try:
        for value in range(5):
            record.send(value)
        wait_for(lambda: len(done) == 5, what="the first five messages")
        redis_cluster.migrate_slot(slot, source, (source + 1) % 3)
        for value in range(5, 10):
            record.send(value)
        broker.join("moving", timeout=10_000)
        wait_for(lambda: sorted(done) == list(range(10)), what="all ten messages")
    finally:
        worker.stop()
        broker.close()
        redis_cluster.migrate_slot(slot, redis_cluster.owner_of(slot), source)


# -- frames end to end ---------------------------------------------------------------------------------


def test_a_frame_goes_from_the_producer_to_a_processor_and_its_result_comes_back(
    redis_cluster: LocalCluster, cluster_client: RedisCluster
) -> None:
    producer = FrameProducer(redis_cluster.url)
    faces = RecordingProcessor("faces-1", [FACE], redis_cluster.url, result_stream="faces:detected")
    try:
        with running(faces, cluster_client):
            decision = publish(producer, [FACE], camera_id="front-door")
            assert decision.targets == ("faces-1",)
            [result] = wait_for_results(cluster_client, "faces:detected", 1, timeout_s=15)
    finally:
        producer.close()
    assert result["frame_id"] == decision.frame_id
    assert (result["camera_id"], result["processor_id"]) == ("front-door", "faces-1")
    assert int(result["image_bytes"]) == len(IMAGE)
    assert cluster_client.xlen(queue_keys("frameflow", "frames.ready.faces-1").stream) == 0  # acked and deleted


def test_a_frame_fans_out_to_processors_whose_queues_are_on_different_masters(
    redis_cluster: LocalCluster, cluster_client: RedisCluster
) -> None:
    face_id, object_id = ids_on_different_masters(redis_cluster, cluster_client, "cam", 2)
    producer = FrameProducer(redis_cluster.url)
    faces = RecordingProcessor(face_id, [FACE], redis_cluster.url)
    objects = RecordingProcessor(object_id, [OBJECT], redis_cluster.url)
    try:
        with running(faces, cluster_client), running(objects, cluster_client):
            decisions = [publish(producer, [FACE, OBJECT]) for _ in range(5)]
            for processor in (faces, objects):
                results = wait_for_results(cluster_client, f"results:{processor.processor_id}", 5, timeout_s=15)
                assert sorted(result["frame_id"] for result in results) == sorted(d.frame_id for d in decisions)
                # Fanned out, so the image was claim-checked once and resolved by each processor.
                assert all(frame[b"image_data"] == base64.b64encode(IMAGE) for frame in processor.frames)
    finally:
        producer.close()
    assert all(set(decision.targets) == {face_id, object_id} for decision in decisions)


def test_the_cluster_client_scans_every_master(redis_cluster: LocalCluster, cluster_client: RedisCluster) -> None:
    keys = {f"frameflow:dead:{{frames:ready:p-{number}}}" for number in range(12)}
    for key in keys:
        cluster_client.xadd(key, {"f": "v"})
    assert len({master_of(redis_cluster, cluster_client, key) for key in keys}) == 3
    found = {key.decode() for key in cluster_client.scan_iter(match="frameflow:dead:*", _type="STREAM")}
    assert found == keys
