"""A processor's queue bound against a real Redis: ``drop_oldest`` drops what no worker took yet,
``reject_newest`` refuses the new frame, both counted; ``0`` keeps everything, and a running
ProcessorClient's bound is the one routers apply.
"""

from __future__ import annotations

import pytest
import redis

from pipeline import FrameProducer, ProcessorRegistry

from .processor_harness import (
    RecordingProcessor,
    drops,
    publish,
    queue_entries,
    queued_frame_ids,
    register_fake,
    running,
    wait_for,
)

FACE = "face_detection"


def test_drop_oldest_drops_undelivered_entries_and_counts_them(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    register_fake(redis_client, "face-1", (FACE,), queue_bound=3, overflow="drop_oldest")
    first = [publish(producer, [FACE]) for _ in range(3)]
    # A worker takes the oldest: it is in progress and must not be dropped.
    redis_client.xgroup_create("frames:ready:face-1", "workers", id="0")
    redis_client.xreadgroup("workers", "worker-1", {"frames:ready:face-1": ">"}, count=1)
    later = [publish(producer, [FACE]) for _ in range(2)]
    assert all(decision.dropped == 0 and decision.targets == ("face-1",) for decision in first + later)
    assert queued_frame_ids(redis_client, "face-1") == [first[0].frame_id, later[0].frame_id, later[1].frame_id]
    assert drops(redis_client, "face-1") == {"bound": 2}


def test_reject_newest_refuses_and_counts(redis_client: redis.Redis, producer: FrameProducer) -> None:
    register_fake(redis_client, "face-1", (FACE,), queue_bound=2, overflow="reject_newest")
    decisions = [publish(producer, [FACE]) for _ in range(4)]
    assert [decision.dropped for decision in decisions] == [0, 0, 1, 1]
    assert queued_frame_ids(redis_client, "face-1") == [decisions[0].frame_id, decisions[1].frame_id]
    assert drops(redis_client, "face-1") == {"bound": 2}


def test_unbounded_queue_drops_nothing(redis_client: redis.Redis, producer: FrameProducer) -> None:
    register_fake(redis_client, "face-1", (FACE,), queue_bound=0)
    decisions = [publish(producer, [FACE]) for _ in range(5)]
    assert all(decision.dropped == 0 for decision in decisions)
    assert len(queue_entries(redis_client, "face-1")) == 5
    assert drops(redis_client, "face-1") == {}


@pytest.mark.parametrize(("overflow", "kept"), [("drop_oldest", [0, 2]), ("reject_newest", [0, 1])])
def test_processor_queue_bound_applies_to_a_busy_processor(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer, overflow: str, kept: list[int]
) -> None:
    class Bounded(RecordingProcessor):
        queue_bound = 2

    Bounded.overflow = overflow
    processor = Bounded("face-1", [FACE], redis_url, capacity=1)
    processor.gate.clear()
    with running(processor, redis_client):
        info = ProcessorRegistry(redis_client).get("face-1")
        assert info is not None and (info.queue_bound, info.overflow) == (2, overflow)
        decisions = [publish(producer, [FACE])]
        assert processor.started.wait(10), "the first frame never started"
        decisions += [publish(producer, [FACE]) for _ in range(2)]  # one fits behind the running frame
        assert [decision.dropped for decision in decisions] == ([0, 0, 1] if overflow == "reject_newest" else [0] * 3)
        assert drops(redis_client, "face-1") == {"bound": 1}
        processor.gate.set()
        wait_for(lambda: processor.stats.processed == 2, what="the kept frames to be processed")
        wait_for(lambda: not queue_entries(redis_client, "face-1"), what="the queue to drain")
    assert processor.frame_ids() == [decisions[n].frame_id for n in kept]
