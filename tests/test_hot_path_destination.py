"""Every connection of the hot path reaches the server its URL names, and no other.

The broker's hot path (send, the router's pipeline, fetch, acks, results) runs on
connections of its own (:mod:`pipeline.streams.direct`). A connection opened any other way
than the client's pool opens it falls back to redis-py's default ``localhost:6379``,
and on a machine that runs a Redis there, frames silently go to a server nobody
reads. So each test here runs in a network namespace of its own
(:mod:`tests.private_network`) with a *decoy* Redis at exactly that address, sends
frames through a producer and a processor for one kind of URL, and asserts on both
servers: the frames, their results and their acks are on the server the URL names,
and the decoy received no connection and holds nothing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline import FrameProducer
from pipeline.domain.results import wait_for_results
from pipeline.processes.scheduler import PipelineScheduler
from pipeline.streams.connection import RedisClient, connect
from pipeline.streams.embedded import EmbeddedRedis, TlsFiles
from pipeline.streams.keys import queue_keys
from tests.cluster import LocalCluster, cluster_server_binary
from tests.private_network import DEFAULT_REDIS_PORT, in_private_network
from tests.processor_harness import RecordingProcessor, publish, running
from tests.sentinel import LocalSentinel
from tests.tls import Certificates

FACE = "face_detection"
PROCESSOR = "faces-1"
RESULTS = "faces:detected"
QUEUE = queue_keys("frameflow", f"frames.ready.{PROCESSOR}").stream
FRAMES = 20

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def system_redis_server() -> str:
    binary = cluster_server_binary()
    if binary is None:
        pytest.fail("these tests need redis-server 7 (apt-get install redis-server, or set FRAMEFLOW_REDIS_SERVER)")
    return binary


class Decoy:
    """A Redis at redis-py's default address, with one client of ours to read its books."""

    def __init__(self) -> None:
        self.server = EmbeddedRedis(
            port=DEFAULT_REDIS_PORT, binary=system_redis_server(), extra_args=["--bind", "127.0.0.1", "-::1"]
        )

    def __enter__(self) -> Decoy:
        self.server.start()
        self.client = redis.Redis(host="localhost", port=DEFAULT_REDIS_PORT)
        self.connections_before = self._connections()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.close()
        self.server.stop()

    def _connections(self) -> int:
        return int(self.client.info("stats")["total_connections_received"])

    def assert_untouched(self) -> None:
        assert self._connections() == self.connections_before, "something connected to the decoy at localhost:6379"
        assert self.client.dbsize() == 0, f"the decoy holds {self.client.keys('*')!r}"


def exchange_frames(url: str, target: RedisClient, count: int = FRAMES) -> None:
    """A producer and a processor given ``url`` move ``count`` frames; asserts on ``target``."""
    producer = FrameProducer(url)
    processor = RecordingProcessor(PROCESSOR, [FACE], url, result_stream=RESULTS)
    try:
        with running(processor, target):  # type: ignore[arg-type]
            decisions = [publish(producer, [FACE]) for _ in range(count)]
            assert all(decision.targets == (PROCESSOR,) for decision in decisions)
            results = wait_for_results(target, RESULTS, count, timeout_s=30)  # type: ignore[arg-type]
    finally:
        producer.close()
    assert sorted(result["frame_id"] for result in results) == sorted(decision.frame_id for decision in decisions)
    assert_frames_landed(target, count)


def assert_frames_landed(target: RedisClient, count: int) -> None:
    """The queue on ``target`` took ``count`` entries, and every one was acked (and deleted)."""
    stream = target.xinfo_stream(QUEUE)
    assert stream["entries-added"] == count
    assert stream["length"] == 0
    assert target.xpending(QUEUE, "workers")["pending"] == 0


@contextlib.contextmanager
def client_of(url: str) -> Iterator[RedisClient]:
    client = connect(url)
    try:
        yield client
    finally:
        client.close()


@in_private_network
def test_a_plain_url_sends_everything_to_its_server() -> None:
    with Decoy() as decoy, EmbeddedRedis(binary=system_redis_server()) as server, client_of(server.url) as target:
        exchange_frames(server.url, target)
        decoy.assert_untouched()


@in_private_network
def test_a_unix_socket_url_sends_everything_to_its_socket() -> None:
    with tempfile.TemporaryDirectory(prefix="frameflow-unix-") as folder:
        socket_path = os.path.join(folder, "redis.sock")
        server = EmbeddedRedis(
            binary=system_redis_server(), extra_args=["--unixsocket", socket_path, "--unixsocketperm", "700"]
        )
        url = f"unix://{socket_path}?db=0"
        with Decoy() as decoy, server, client_of(url) as target:
            exchange_frames(url, target)
            decoy.assert_untouched()


@in_private_network
def test_a_tls_url_sends_everything_to_its_server() -> None:
    with tempfile.TemporaryDirectory(prefix="frameflow-tls-") as folder:
        certificates = Certificates.make(Path(folder))
        tls = TlsFiles(certificates.server_cert, certificates.server_key, certificates.ca_file)
        with Decoy() as decoy, EmbeddedRedis(binary=system_redis_server(), tls=tls) as server:
            assert server.url.startswith("rediss://")
            with client_of(server.url) as target:
                exchange_frames(server.url, target)
            decoy.assert_untouched()


@in_private_network
def test_a_sentinel_url_sends_everything_to_the_master_the_sentinels_name() -> None:
    with Decoy() as decoy, LocalSentinel(system_redis_server(), password="s3cret", sentinels=3) as sentinel:
        with redis.Redis(port=sentinel.master.port, password="s3cret") as master:
            exchange_frames(sentinel.url(), master)
        decoy.assert_untouched()


@in_private_network
def test_a_sentinel_url_follows_a_failover_to_the_promoted_replica() -> None:
    binary = system_redis_server()
    with Decoy() as decoy, LocalSentinel(binary, password="s3cret", replicas=1) as sentinel:
        url = sentinel.url()
        producer = FrameProducer(url)
        processor = RecordingProcessor(PROCESSOR, [FACE], url, result_stream=RESULTS)
        # As deployed: a scheduler releases frames parked while the processor's registry entry
        # lapsed during the failover (its heartbeats failed until it reconnected).
        scheduler = PipelineScheduler(FrameProducer(url).broker, interval_s=0.2)
        old = redis.Redis(port=sentinel.master.port, password="s3cret")
        try:
            scheduler.start()
            with running(processor, old):
                first = [publish(producer, [FACE]) for _ in range(FRAMES)]
                wait_for_results(old, RESULTS, FRAMES, timeout_s=30)
                promoted = sentinel.fail_over()
                new = redis.Redis(port=promoted.port, password="s3cret")
                # The same producer, processor and broker, without a restart: the sentinels' new master.
                second = [publish(producer, [FACE]) for _ in range(FRAMES)]
                results = wait_for_results(new, RESULTS, 2 * FRAMES, timeout_s=30)
        finally:
            scheduler.stop()
            scheduler.broker.close()
            producer.close()
            old.close()
        published = {decision.frame_id for decision in first + second}
        assert {result["frame_id"] for result in results} == published
        # No entries-added count here: the scheduler may have reaped the queue while the processor's
        # entry had lapsed, and a reaped queue starts counting again. Nothing is left unacked.
        assert new.xlen(QUEUE) == 0 and new.xpending(QUEUE, "workers")["pending"] == 0
        assert old.info("replication")["role"] == "slave"  # demoted: it took no write after the failover
        new.close()
        decoy.assert_untouched()


@in_private_network
def test_a_cluster_url_sends_everything_to_its_masters() -> None:
    with Decoy() as decoy, LocalCluster(system_redis_server()) as cluster, client_of(cluster.url) as target:
        exchange_frames(cluster.url, target)
        decoy.assert_untouched()
