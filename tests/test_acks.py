"""Batched acknowledgements (pipeline/streams/acks.py) and what they change in the held set."""

from __future__ import annotations

import threading

import dramatiq
import pytest
import redis
from dramatiq.errors import QueueJoinTimeout
from dramatiq.middleware import CurrentMessage

from pipeline import RedisStreamsBroker
from pipeline.streams.acks import AckBatcher
from pipeline.streams.leases import HeldEntries
from tests.polling import wait_until


def message(number: int) -> dramatiq.Message:
    return dramatiq.Message(queue_name="default", actor_name="a", args=(number,), kwargs={}, options={})


def fetch(broker: RedisStreamsBroker, count: int, prefetch: int | None = None):
    broker.declare_queue("default")
    for number in range(count):
        broker.enqueue(message(number))
    consumer = broker.consume("default", prefetch=prefetch or count, timeout=50)
    return consumer, [next(consumer) for _ in range(count)]


class GatedWrites:
    """An ``acknowledge`` function that records its batches and can be held shut or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.open = threading.Event()
        self.open.set()
        self.failures: list[Exception] = []
        self.calls = 0

    def __call__(self, entry_ids: list[bytes]) -> None:
        self.calls += 1
        assert self.open.wait(10)
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(list(entry_ids))


def batcher_with(writes: GatedWrites, held: HeldEntries) -> AckBatcher:
    return AckBatcher(writes, held.release_acked, name="test-acks")


def test_acked_entries_are_deleted_and_leave_nothing_pending(broker: RedisStreamsBroker, redis_client) -> None:
    consumer, taken = fetch(broker, 20)
    for proxy in taken:
        consumer.ack(proxy)
    assert consumer.flush_acks(5)
    assert redis_client.xlen("default") == 0
    assert redis_client.xinfo_groups("default")[0]["pending"] == 0
    assert consumer.held_ids() == []


def test_acks_that_arrive_during_a_write_go_out_together() -> None:
    writes, held = GatedWrites(), HeldEntries()
    held.add([b"1-0", b"2-0", b"3-0", b"4-0"])
    batcher = batcher_with(writes, held)
    writes.open.clear()
    held.acked()
    batcher.submit(b"1-0")
    wait_until(lambda: writes.calls == 1, 5, "the first write to start")
    for entry_id in (b"2-0", b"3-0", b"4-0"):  # while the first write is in flight
        held.acked()
        batcher.submit(entry_id)
    writes.open.set()
    assert batcher.flush(5)
    assert writes.batches == [[b"1-0"], [b"2-0", b"3-0", b"4-0"]]
    batcher.close()


def test_an_acked_entry_stays_held_until_its_batch_is_written() -> None:
    writes, held = GatedWrites(), HeldEntries()
    held.add([b"1-0"])
    batcher = batcher_with(writes, held)
    writes.open.clear()
    held.acked()
    batcher.submit(b"1-0")
    wait_until(lambda: writes.calls == 1, 5, "the write to start")
    assert held.snapshot() == [b"1-0"]  # its lease is still renewed
    assert not batcher.flush(0.05)
    writes.open.set()
    assert batcher.flush(5)
    assert held.snapshot() == []
    batcher.close()


def test_a_connection_error_during_a_write_is_retried_and_loses_no_ack() -> None:
    writes, held = GatedWrites(), HeldEntries()
    held.add([b"1-0", b"2-0"])
    writes.failures = [redis.ConnectionError("Redis went away"), redis.TimeoutError("still away")]
    batcher = batcher_with(writes, held)
    for entry_id in (b"1-0", b"2-0"):
        held.acked()
        batcher.submit(entry_id)
    assert batcher.flush(10)
    assert sorted(entry for batch in writes.batches for entry in batch) == [b"1-0", b"2-0"]
    assert writes.calls >= 3
    assert held.snapshot() == []
    batcher.close()


def test_acked_entries_free_their_prefetch_slot_before_the_write() -> None:
    held = HeldEntries()
    held.add([b"1-0", b"2-0"])
    assert held.wait_for_slots(prefetch=2, timeout_s=0.01) == 0
    held.acked()  # 1-0's work is done; its write is still to come
    assert held.wait_for_slots(prefetch=2, timeout_s=0.01) == 1
    assert sorted(held.snapshot()) == [b"1-0", b"2-0"]  # still held: its lease is renewed
    held.add([b"3-0"])
    held.acked()  # 2-0 done too
    held.add([b"4-0"])
    assert held.wait_for_slots(prefetch=2, timeout_s=0.01) == 0  # never more than twice the prefetch held
    held.release_acked([b"1-0", b"2-0"])
    assert sorted(held.snapshot()) == [b"3-0", b"4-0"]
    assert held.wait_for_slots(prefetch=2, timeout_s=0.01) == 0
    held.acked()
    assert held.wait_for_slots(prefetch=2, timeout_s=0.01) == 1


def test_join_waits_for_acks_to_land(broker: RedisStreamsBroker, redis_client) -> None:
    _, [proxy] = fetch(broker, 1)
    batcher = broker.ack_batcher("default")
    gate = threading.Event()
    write = batcher._acknowledge

    def held_shut(entry_ids: list[bytes]) -> None:
        assert gate.wait(10)
        write(entry_ids)

    batcher._acknowledge = held_shut
    broker.held_entries("default").acked()  # what consumer.ack does on a worker thread, without waiting
    batcher.submit(proxy.entry_id)
    with pytest.raises(QueueJoinTimeout):
        broker.join("default", timeout=100)
    gate.set()
    broker.join("default", timeout=5000)
    assert redis_client.xlen("default") == 0


def test_closing_the_consumer_writes_pending_acks(broker: RedisStreamsBroker, redis_client) -> None:
    consumer, taken = fetch(broker, 5)
    for proxy in taken:
        consumer.ack(proxy)
    consumer.close()
    assert redis_client.xlen("default") == 0
    assert consumer.held_ids() == []


def test_writes_go_with_the_ack_and_only_for_a_delivery_that_succeeded(
    broker: RedisStreamsBroker, worker, redis_client
) -> None:
    broker.add_middleware(CurrentMessage())

    @dramatiq.actor(max_retries=0)
    def produce(value: int) -> None:
        CurrentMessage.get_current_message().write_with_ack("XADD", "results", "*", "value", str(value))
        if value < 0:
            raise ValueError("negative")

    for value in (1, 2, -1, 3):
        produce.send(value)
    broker.join(produce.queue_name, fail_fast=False)
    assert sorted(fields[b"value"] for _, fields in redis_client.xrange("results")) == [b"1", b"2", b"3"]
    assert [letter.reason for letter in broker.dead_letter_queue("default").list()] == ["ValueError: negative"]


def test_a_delivery_that_raised_writes_nothing_even_when_retries_ack_it(
    broker: RedisStreamsBroker, worker, redis_client
) -> None:
    broker.add_middleware(CurrentMessage())
    attempts: list[int] = []

    @dramatiq.actor(max_retries=1, min_backoff=10, max_backoff=10)
    def flaky() -> None:
        attempts.append(1)
        CurrentMessage.get_current_message().write_with_ack("XADD", "results", "*", "attempt", str(len(attempts)))
        if len(attempts) == 1:
            raise ValueError("first attempt fails")

    flaky.send()
    broker.join(flaky.queue_name, fail_fast=False)
    assert [fields[b"attempt"] for _, fields in redis_client.xrange("results")] == [b"2"]


def test_a_message_whose_result_redis_refuses_is_not_acknowledged(broker: RedisStreamsBroker, redis_client) -> None:
    redis_client.set("results", "not a stream")  # XADD answers WRONGTYPE
    consumer, [proxy] = fetch(broker, 1)
    proxy.write_with_ack("XADD", "results", "*", "value", "1")
    consumer.ack(proxy)
    assert consumer.flush_acks(5)
    assert redis_client.xlen("default") == 1  # still there, pending: delivered again once its lease lapses
    assert redis_client.xinfo_groups("default")[0]["pending"] == 1
    assert consumer.held_ids() == []  # no longer renewed
