"""Durable writes (pipeline/streams/durability.py): a durable publish or ack returns only once a replica has it.

A primary with one replica on loopback (``--repl-diskless-sync no``, so the first sync starts at once).
A paused replica (SIGSTOP) is how a test holds replication back: a durable write's ``WAIT`` then blocks
on the primary, which the primary's ``blocked_clients`` shows, and nothing else is timed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis

from pipeline import EmbeddedRedis, FrameProducer, NotReplicated, RedisStreamsBroker
from pipeline.streams.cluster import ClusterDirectRedis
from pipeline.streams.connection import connect
from pipeline.streams.consumer import StreamConsumer, StreamMessageProxy
from pipeline.streams.direct import DirectRedis
from pipeline.streams.durability import ConfirmedRoundTrips, Durability
from tests.cluster import LocalCluster
from tests.polling import wait_until

from .processor_harness import IMAGE, RecordingProcessor, queue_entries, register_fake, running

FACE = "face_detection"

#: Long enough that a durable write never gives up while a test holds its replica back on purpose.
PATIENT_MS = 60_000

#: Short, for the tests where the replica never answers in time.
IMPATIENT_MS = 200

_NO_DISK_SYNC = ["--repl-diskless-sync", "no", "--save", ""]


class Replicated:
    """A primary and one replica of it."""

    def __init__(self) -> None:
        self.primary = EmbeddedRedis(extra_args=_NO_DISK_SYNC)
        self.replica: EmbeddedRedis | None = None

    def __enter__(self) -> Replicated:
        self.primary.start()
        self.replica = EmbeddedRedis(
            extra_args=[*_NO_DISK_SYNC, "--replicaof", "127.0.0.1", str(self.primary.port)]
        ).start()
        wait_until(self._linked, 30, "the replica to sync with its primary", 0.05)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self.replica is not None
        self.replica.stop()
        self.primary.stop()

    def _linked(self) -> bool:
        with self.replica_client() as client:
            replica_up = client.info("replication").get("master_link_status") == "up"
        with self.primary_client() as client:
            return replica_up and client.info("replication").get("connected_slaves") == 1

    def primary_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.primary.url)

    def replica_client(self) -> redis.Redis:
        assert self.replica is not None
        return redis.Redis.from_url(self.replica.url)

    @contextlib.contextmanager
    def replica_paused(self) -> Iterator[None]:
        """The replica stopped (SIGSTOP) for the block: it neither applies nor confirms anything."""
        assert self.replica is not None and self.replica.process is not None
        os.kill(self.replica.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.replica.process.pid, signal.SIGCONT)

    def waits_on_primary(self) -> int:
        """Clients blocked on the primary (a durable write's WAIT, while its replica is paused)."""
        with self.primary_client() as client:
            return int(client.info("clients")["blocked_clients"])

    def wait_calls(self) -> int:
        with self.primary_client() as client:
            return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


@pytest.fixture(scope="module")
def servers() -> Iterator[Replicated]:
    with Replicated() as servers:
        yield servers


@pytest.fixture
def replicated(servers: Replicated) -> Iterator[Replicated]:
    with servers.primary_client() as client:
        client.flushall()
        client.config_resetstat()
    wait_until(lambda: servers.replica_client().dbsize() == 0, 30, "the replica to be flushed too")
    yield servers


@contextlib.contextmanager
def producer_on(servers: Replicated, **options: Any) -> Iterator[FrameProducer]:
    producer = FrameProducer(servers.primary.url, **options)
    try:
        yield producer
    finally:
        producer.close()


def frame(camera: str = "cam-1") -> dict[str, Any]:
    return {"camera_id": camera, "image": IMAGE, "capabilities": [FACE], "width": 4, "height": 4}


class InThread:
    """Runs ``call`` on a thread of its own; its return value or exception is kept."""

    def __init__(self, call: Any) -> None:
        self.outcome: list[Any] = []
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Any) -> None:
        try:
            self.outcome.append(call())
        except BaseException as error:
            self.outcome.append(error)

    def result(self, timeout: float = 30) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"still running after {timeout:g}s"
        if isinstance(self.outcome[0], BaseException):
            raise self.outcome[0]
        return self.outcome[0]


# -- publishing ---------------------------------------------------------------------------------
def test_a_durable_publish_is_on_the_replica_when_it_returns(replicated: Replicated) -> None:
    with replicated.primary_client() as primary:
        register_fake(primary, "face-a", (FACE,))
    with producer_on(replicated, durability="replicated", replica_timeout_ms=PATIENT_MS) as producer:
        decision = producer.publish(**frame())
        decisions = producer.publish_many([frame(f"cam-{index}") for index in range(5)])
        with replicated.replica_client() as replica:  # read at once: no waiting for replication here
            on_replica = [entry[b"frame_id"].decode() for entry in queue_entries(replica, "face-a")]
    assert on_replica == [decision.frame_id, *(each.frame_id for each in decisions)]
    assert replicated.wait_calls() == 2  # one WAIT per round trip, in it


def test_a_durable_publish_returns_only_once_the_paused_replica_confirmed_it(replicated: Replicated) -> None:
    with replicated.primary_client() as primary:
        register_fake(primary, "face-a", (FACE,))
    with producer_on(replicated, durability="replicated", replica_timeout_ms=PATIENT_MS) as producer:
        with replicated.replica_paused():
            publishing = InThread(lambda: producer.publish(**frame()))
            wait_until(replicated.waits_on_primary, 20, "the publish to wait for its replica on the primary")
            assert publishing.thread.is_alive()  # written on the primary, not returned: its replica is away
        decision = publishing.result()
    with replicated.replica_client() as replica:
        assert [entry[b"frame_id"].decode() for entry in queue_entries(replica, "face-a")] == [decision.frame_id]


def test_a_durable_publish_no_replica_confirms_in_time_raises_not_replicated(replicated: Replicated) -> None:
    with replicated.primary_client() as primary:
        register_fake(primary, "face-a", (FACE,))
    impatient = producer_on(replicated, durability="replicated", replica_timeout_ms=IMPATIENT_MS)
    with impatient as producer, replicated.replica_paused():
        with pytest.raises(NotReplicated, match=r"0 of 1 replica\(s\) confirmed the write within 200 ms"):
            InThread(lambda: producer.publish(**frame())).result(timeout=30)
        with replicated.primary_client() as primary:
            assert len(queue_entries(primary, "face-a")) == 1  # on the primary only: the caller decides


def test_the_default_publish_does_not_wait_for_replicas(replicated: Replicated) -> None:
    with replicated.primary_client() as primary:
        register_fake(primary, "face-a", (FACE,))
        with producer_on(replicated) as producer, replicated.replica_paused():
            assert not producer.broker.durability.waits
            InThread(lambda: producer.publish(**frame())).result(timeout=30)
            assert len(queue_entries(primary, "face-a")) == 1
    assert replicated.wait_calls() == 0


def test_durability_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, replicated: Replicated) -> None:
    monkeypatch.setenv("FRAMEFLOW_DURABILITY", "replicated")
    monkeypatch.setenv("FRAMEFLOW_REPLICA_TIMEOUT_MS", "250")
    with producer_on(replicated) as producer:
        assert producer.broker.durability == Durability(replicas=1, timeout_ms=250)
    with producer_on(replicated, durability="primary") as producer:  # the option wins over the environment
        assert not producer.broker.durability.waits


def test_an_unknown_durability_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="durability must be one of primary, replicated, not 'safe'"):
        Durability.chosen("safe")
    with pytest.raises(ValueError, match="replica timeout must be 1 ms or more"):
        Durability.chosen("replicated", 0)


def test_a_wait_ending_a_batch_is_sent_again_after_a_script_redis_forgot(replicated: Replicated) -> None:
    with replicated.primary_client() as primary:
        script = primary.register_script("return redis.call('INCR', KEYS[1])")
        script(keys=["counter"])
        primary.script_flush()
        direct = ConfirmedRoundTrips(DirectRedis(connect(replicated.primary.url)), Durability(1, PATIENT_MS))
        replies = direct.execute_many([("EVALSHA", script.sha, 1, "counter")], scripts={script.sha: script})
        direct.close()
    assert replies == [2]
    assert replicated.wait_calls() == 2  # the re-run's WAIT follows the write it confirms
    with replicated.replica_client() as replica:
        assert replica.get("counter") == b"2"


def test_a_durable_brokers_send_no_replica_confirms_in_time_raises_not_replicated(replicated: Replicated) -> None:
    with durable_broker(replicated, IMPATIENT_MS) as broker, replicated.replica_paused():
        broker.declare_queue("default")
        sending = InThread(lambda: broker.enqueue(dramatiq.Message("default", "a", (1,), {}, {})))
        with pytest.raises(NotReplicated, match="0 of 1 replica"):
            sending.result()
        with replicated.primary_client() as primary:
            assert primary.xlen("default") == 1


# -- acknowledging ------------------------------------------------------------------------------
def durable_delivery(broker: RedisStreamsBroker) -> tuple[StreamConsumer, StreamMessageProxy]:
    """One message delivered on ``default``, carrying a result entry to write with its ack."""
    broker.declare_queue("default")
    broker.enqueue(dramatiq.Message(queue_name="default", actor_name="a", args=(1,), kwargs={}, options={}))
    consumer = broker.consume("default", prefetch=1, timeout=50)
    delivery = next(consumer)
    assert delivery is not None
    delivery.write_with_ack("XADD", "results", "*", "frame", "1")
    return consumer, delivery


@contextlib.contextmanager
def durable_broker(servers: Replicated, timeout_ms: int) -> Iterator[RedisStreamsBroker]:
    broker = RedisStreamsBroker(servers.primary.url, lease_ms=1000, durability=Durability(1, timeout_ms))
    try:
        yield broker
    finally:
        broker.close()


def test_a_durable_ack_returns_once_its_result_and_ack_are_on_the_replica(replicated: Replicated) -> None:
    with durable_broker(replicated, PATIENT_MS) as broker:
        consumer, delivery = durable_delivery(broker)
        with replicated.replica_paused():
            acking = InThread(lambda: (consumer.ack(delivery), consumer.flush_acks(60)))
            wait_until(replicated.waits_on_primary, 20, "the ack batch to wait for its replica on the primary")
            with replicated.primary_client() as primary:
                assert primary.xlen("results") == 1
                assert primary.xlen("default") == 1  # not acknowledged until a replica has its result
        assert acking.result(timeout=60)[1]
        with replicated.replica_client() as replica:
            assert replica.xlen("results") == 1
            assert replica.xlen("default") == 0  # the ack's own WAIT: the replica has it too


def test_a_result_no_replica_confirms_in_time_is_not_acknowledged(
    replicated: Replicated, caplog: pytest.LogCaptureFixture
) -> None:
    with durable_broker(replicated, IMPATIENT_MS) as broker:
        consumer, delivery = durable_delivery(broker)
        with replicated.replica_paused(), caplog.at_level(logging.WARNING, "pipeline.streams.acks"):
            consumer._acks.submit(delivery.entry_id, delivery.ack_writes)
            assert consumer.flush_acks(30)
        with replicated.primary_client() as primary:
            assert primary.xlen("default") == 1
            assert primary.xpending("default", broker.group)["pending"] == 1  # delivered again once its lease lapses
    assert "Not acknowledging 1 message(s): 0 of 1 replica(s) confirmed" in caplog.text
    assert "Traceback" not in caplog.text


def test_a_durable_processors_result_is_on_the_replica_once_its_frame_left_the_queue(
    replicated: Replicated,
) -> None:
    processor = RecordingProcessor(
        "face-durable",
        [FACE],
        replicated.primary.url,
        result_stream="faces",
        durability="replicated",
        replica_timeout_ms=PATIENT_MS,
    )
    with replicated.primary_client() as primary, running(processor, primary):
        assert processor.broker is not None and processor.broker.durability.waits
        with producer_on(replicated, durability="replicated", replica_timeout_ms=PATIENT_MS) as producer:
            producer.publish(**frame())
        wait_until(lambda: primary.xlen("faces") == 1 and not queue_entries(primary, "face-durable"), 30, "the ack")
        with replicated.replica_client() as replica:  # its result was confirmed before its ack was sent
            assert replica.xlen("faces") == 1


# -- on a Redis Cluster -------------------------------------------------------------------------
def test_on_a_cluster_every_master_a_durable_batch_wrote_to_waits_for_its_replica(redis_cluster: LocalCluster) -> None:
    """Masters without replicas: each WAIT answers 0 after the timeout, and each master got its own."""
    cluster = redis_cluster
    cluster.flush()
    client = connect(cluster.url)
    keys = [next(f"k{n}" for n in range(10_000) if cluster.owner_of(client.keyslot(f"k{n}")) == i) for i in range(3)]
    for index in range(3):
        with cluster.node_client(index) as node:
            node.config_resetstat()
    direct = ConfirmedRoundTrips(ClusterDirectRedis(client), Durability(1, IMPATIENT_MS))
    try:
        with pytest.raises(NotReplicated, match="0 of 1 replica") as raised:
            direct.execute_many([("SET", key, "v") for key in keys])
    finally:
        direct.close()
        client.close()
    assert raised.value.replies == [b"OK", b"OK", b"OK"]  # every part ran; what is unconfirmed is said
    for index in range(3):
        with cluster.node_client(index) as node:
            assert node.info("commandstats")["cmdstat_wait"]["calls"] == 1, f"master {index}"
