"""The broker's single-process behaviour against a real Redis."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref

import dramatiq
import pytest
import redis
from dramatiq.errors import QueueJoinTimeout
from redis.cluster import RedisCluster

from pipeline import DeadLettered, InvalidQueueName, RedisStreamsBroker
from pipeline.streams import consumer as consumer_module
from tests.polling import wait_until


def test_queue_lives_in_a_stream_named_after_it(broker: RedisStreamsBroker, redis_client) -> None:
    broker.declare_queue("frames.ready.face-1")
    message = dramatiq.Message(queue_name="frames.ready.face-1", actor_name="a", args=(1,), kwargs={}, options={})
    broker.enqueue(message)
    entries = redis_client.xrange("frames:ready:face-1")
    assert len(entries) == 1
    assert b'"actor_name":"a"' in entries[0][1][b"message"]


def test_queue_names_with_colons_are_refused(broker: RedisStreamsBroker) -> None:
    with pytest.raises(InvalidQueueName, match="no colons"):
        broker.declare_queue("frames:ready")


def test_acked_messages_leave_nothing_behind(broker, worker, redis_client) -> None:
    done = []

    @dramatiq.actor
    def record(value):
        done.append(value)

    for value in range(200):
        record.send(value)
    broker.join(record.queue_name)
    worker.join()
    assert sorted(done) == list(range(200))
    assert redis_client.xlen("default") == 0
    assert redis_client.xinfo_groups("default")[0]["pending"] == 0


def test_delayed_messages_wait_in_redis_not_in_the_worker(broker, redis_client) -> None:
    @dramatiq.actor
    def later():
        pass

    later.send_with_options(delay=60_000)
    assert redis_client.xlen("default") == 0
    assert redis_client.zcard("frameflow:delayed:{default}") == 1


def test_delayed_message_runs_once_due(broker, worker) -> None:
    ran = threading.Event()

    @dramatiq.actor
    def later():
        ran.set()

    later.send_with_options(delay=200)
    assert ran.wait(10)
    broker.join(later.queue_name, timeout=5000)


def test_short_delays_enqueued_by_this_process_run_when_due_not_at_housekeeping(broker, worker, monkeypatch) -> None:
    # The worker's consumer is told when a delayed message of this process falls due, instead of
    # finding it at its next housekeeping pass. Housekeeping is made a minute apart here, so a
    # message found by it would run a minute late: the bound below (generous, for a busy machine)
    # holds only if the hint woke the consumer. No wall-clock precision is asserted.
    monkeypatch.setattr(consumer_module, "HOUSEKEEPING_INTERVAL_S", 60.0)
    ran_at: list[float] = []

    @dramatiq.actor
    def later():
        ran_at.append(time.monotonic())

    # The worker started before the actor was declared: its consumer of the queue comes up on a
    # thread of its own, and a hint sent before it exists has no one to reach (housekeeping finds it).
    wait_until(lambda: broker._consumers.get(later.queue_name), 10, "the worker's consumer of the queue")
    late_by = []
    for _ in range(3):
        sent_at = time.monotonic()
        later.send_with_options(delay=100)
        broker.join(later.queue_name, timeout=20_000)
        worker.join()
        late_by.append(ran_at[-1] - sent_at - 0.1)
    assert min(late_by) >= 0  # never before its delay
    assert max(late_by) < 10, late_by  # not at the next housekeeping, a minute away


def test_failed_message_is_dead_lettered_with_its_reason(broker, worker) -> None:
    @dramatiq.actor(max_retries=0)
    def explode():
        raise RuntimeError("camera unplugged")

    explode.send()
    with pytest.raises(RuntimeError, match="camera unplugged"):
        broker.join(explode.queue_name)
    letters = broker.dead_letter_queue("default").list()
    assert [letter.reason for letter in letters] == ["RuntimeError: camera unplugged"]
    assert letters[0].message is not None and letters[0].message.actor_name == "explode"


def test_failed_actors_exception_is_not_kept_alive_by_the_broker(broker, worker, caplog) -> None:
    caplog.set_level(logging.CRITICAL)  # captured log records would hold the exception
    alive: list[weakref.ref[BaseException]] = []

    class Unplugged(Exception):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)
            alive.append(weakref.ref(self))

    @dramatiq.actor(max_retries=0)
    def explode():
        raise Unplugged("camera unplugged")

    explode.send()
    with pytest.raises(Unplugged, match="camera unplugged"):  # a copy of it: same type and text
        broker.join(explode.queue_name)
    worker.join()
    gc.collect()
    assert len(alive) == 1
    assert alive[0]() is None, "the broker keeps the actor's exception (and its traceback's frames) alive"


def test_join_fail_fast_false_ignores_dead_letters(broker, worker) -> None:
    @dramatiq.actor(max_retries=0)
    def explode():
        raise RuntimeError("boom")

    explode.send()
    broker.join(explode.queue_name, fail_fast=False)
    assert len(broker.dead_letters) == 1


def test_join_raises_dead_lettered_for_failures_of_other_processes(broker, redis_client) -> None:
    other = RedisStreamsBroker(client=broker.client)  # stands for another process
    other.declare_queue("default")
    message = dramatiq.Message(queue_name="default", actor_name="gone", args=(), kwargs={}, options={})
    other.enqueue(message)
    entry_id = redis_client.xrange("default")[0][0]
    other.run_claim(other.keys_for("default"), "someone", 0)
    redis_client.xreadgroup("workers", "someone", {"default": ">"})
    other.dead_letter(other.keys_for("default"), entry_id, "KeyError: 'x'", None)
    broker.declare_queue("default")
    with pytest.raises(DeadLettered, match="KeyError"):
        broker.join("default")


def test_join_times_out(broker) -> None:
    @dramatiq.actor
    def never_consumed():
        pass

    never_consumed.send()
    with pytest.raises(QueueJoinTimeout):
        broker.join(never_consumed.queue_name, timeout=100)


def test_dead_letters_can_be_requeued_and_purged(broker, worker) -> None:
    attempts = []

    @dramatiq.actor(max_retries=0)
    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first time fails")

    flaky.send()
    broker.join(flaky.queue_name, fail_fast=False)
    dead = broker.dead_letter_queue("default")
    assert len(dead) == 1
    assert dead.requeue() == 1
    broker.join(flaky.queue_name, fail_fast=False)
    assert len(attempts) == 2
    assert len(dead) == 0

    attempts.clear()
    flaky.send()
    broker.join(flaky.queue_name, fail_fast=False)
    assert dead.purge() == 1
    assert len(dead) == 0


def test_malformed_entry_is_dead_lettered_and_worker_keeps_going(broker, worker, redis_client) -> None:
    done = threading.Event()

    @dramatiq.actor
    def fine():
        done.set()

    redis_client.xadd("default", {"message": b"{not json"})
    redis_client.xadd("default", {"camera": b"no envelope here"})
    fine.send()
    assert done.wait(10)
    broker.join(fine.queue_name, fail_fast=False)
    reasons = sorted(letter.reason for letter in broker.dead_letter_queue("default").list())
    assert reasons[0].startswith("malformed entry: the 'message' field is not valid JSON")
    assert reasons[1] == "malformed entry: the entry has no 'message' field (fields: camera)"


def test_prefetch_bounds_what_a_consumer_holds(broker, redis_client) -> None:
    broker.declare_queue("default")
    for number in range(10):
        broker.enqueue(dramatiq.Message(queue_name="default", actor_name="a", args=(number,), kwargs={}, options={}))
    consumer = broker.consume("default", prefetch=3, timeout=50)
    taken = [next(consumer) for _ in range(3)]
    assert all(message is not None for message in taken)
    assert next(consumer) is None  # the fourth would exceed the prefetch
    assert redis_client.xinfo_groups("default")[0]["pending"] == 3
    consumer.ack(taken[0])
    assert next(consumer) is not None


def test_close_hands_prefetched_messages_back(broker, redis_client) -> None:
    broker.declare_queue("default")
    for number in range(5):
        broker.enqueue(dramatiq.Message(queue_name="default", actor_name="a", args=(number,), kwargs={}, options={}))
    first = broker.consume("default", prefetch=5, timeout=50)
    taken = next(first)
    assert taken is not None
    first.requeue([taken])
    first.close()
    assert redis_client.xinfo_groups("default")[0]["pending"] == 0
    second = broker.consume("default", prefetch=10, timeout=50)
    received = [next(second) for _ in range(5)]
    assert sorted(message.args[0] for message in received) == [0, 1, 2, 3, 4]


def test_lapsed_lease_is_taken_over_by_another_consumer(broker, redis_client) -> None:
    broker.declare_queue("default")
    broker.enqueue(dramatiq.Message(queue_name="default", actor_name="a", args=(), kwargs={}, options={}))
    # A consumer of a dead process: it read the entry and never renews it.
    redis_client.xgroup_create("default", "workers", id="0", mkstream=True)
    redis_client.xreadgroup("workers", "dead-host:1:x", {"default": ">"})
    consumer = broker.consume("default", prefetch=1, timeout=100)
    deadline = time.monotonic() + 10
    taken = None
    while taken is None and time.monotonic() < deadline:
        taken = next(consumer)
    assert taken is not None
    assert taken.actor_name == "a"
    pending = redis_client.xpending_range("default", "workers", "-", "+", 10)
    assert [entry["consumer"].decode() for entry in pending] == [broker.consumer_name]
    assert pending[0]["times_delivered"] == 2


def test_a_queue_deleted_while_its_consumer_waits_is_recreated_not_an_error(broker, redis_client) -> None:
    """The scheduler reaps a dead processor's queue while a consumer may still be blocked on it: Redis 7
    answers that read with an UNBLOCKED error, which must end the wait like an empty read (Dramatiq's
    consumer thread would log it as an unexpected error with a traceback and restart 3 s later)."""
    broker.declare_queue("default")
    consumer = broker.consume("default", prefetch=1, timeout=5000)
    waited: list[object] = []
    reader = threading.Thread(target=lambda: waited.append(next(consumer)), daemon=True)
    reader.start()
    wait_until(lambda: _blocked_clients(redis_client) >= 1, 10, "the consumer to block on its read")
    redis_client.delete("default")
    reader.join(timeout=10)
    assert waited == [None]
    broker.enqueue(dramatiq.Message(queue_name="default", actor_name="a", args=(1,), kwargs={}, options={}))
    message = wait_until(lambda: next(consumer), 10, "the message on the recreated queue")
    assert list(message.args) == [1]


def _blocked_clients(client: redis.Redis | RedisCluster) -> int:
    if isinstance(client, RedisCluster):  # the cluster pass: the read blocks on the stream's master
        replies = client.info("clients", target_nodes=RedisCluster.PRIMARIES)
        return sum(reply["blocked_clients"] for reply in replies.values())
    return client.info("clients")["blocked_clients"]
