"""FrameProducer.publish_many: many frames routed and written with few round trips."""

from __future__ import annotations

from collections import Counter

import pytest
import redis

from pipeline import FrameProducer, FrameRejected
from pipeline.processes.producer import PUBLISH_CHUNK

from .processor_harness import IMAGE, queue_entries, register_fake

FACE, OBJECT = "face_detection", "object_detection"


@pytest.fixture
def producer(redis_url: str, redis_client: redis.Redis):
    producer = FrameProducer(redis_url)
    yield producer
    producer.close()


def spec(camera: str = "cam-1", capabilities: tuple[str, ...] = (FACE,), **changes) -> dict:
    return {"camera_id": camera, "image": IMAGE, "capabilities": list(capabilities), "width": 4, "height": 4, **changes}


def test_every_frame_is_written_in_order_with_its_decision(redis_client: redis.Redis, producer: FrameProducer) -> None:
    register_fake(redis_client, "face-a", (FACE,), queue_bound=0)
    frames = [spec(camera=f"cam-{index}") for index in range(2 * PUBLISH_CHUNK + 5)]
    decisions = producer.publish_many(frames)
    assert [decision.targets for decision in decisions] == [("face-a",)] * len(frames)
    entries = queue_entries(redis_client, "face-a")
    assert [entry[b"frame_id"].decode() for entry in entries] == [decision.frame_id for decision in decisions]
    assert [entry[b"camera_id"] for entry in entries] == [f"cam-{index}".encode() for index in range(len(frames))]
    assert redis_client.hget("frameflow:counts:{frames:ready:face-a}", "routed") == str(len(frames)).encode()


def test_a_batch_is_balanced_as_if_its_frames_came_one_by_one(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    register_fake(redis_client, "face-a", (FACE,), capacity=1)
    register_fake(redis_client, "face-b", (FACE,), capacity=3)
    decisions = producer.publish_many([spec() for _ in range(8)])
    assert Counter(decision.targets[0] for decision in decisions) == {"face-a": 2, "face-b": 6}


def test_fan_out_parking_and_bounds_work_as_in_publish(redis_client: redis.Redis, producer: FrameProducer) -> None:
    register_fake(redis_client, "face-a", (FACE,), queue_bound=2, overflow="reject_newest")
    decisions = producer.publish_many([spec(capabilities=(FACE, OBJECT)) for _ in range(3)])
    assert [decision.parked for decision in decisions] == [(OBJECT,)] * 3
    assert [decision.dropped for decision in decisions] == [0, 0, 1]
    assert redis_client.xlen(f"frameflow:parked:{{{OBJECT}}}") == 3


def test_one_invalid_frame_rejects_the_batch_before_anything_is_sent(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    register_fake(redis_client, "face-a", (FACE,))
    with pytest.raises(FrameRejected, match="frame 1: bad camera_id"):
        producer.publish_many([spec(), spec(camera="no spaces allowed"), spec()])
    with pytest.raises(FrameRejected, match=r"frame 0: .*width"):
        producer.publish_many([{"camera_id": "cam", "image": IMAGE, "capabilities": [FACE], "height": 4}])
    assert queue_entries(redis_client, "face-a") == []
    assert producer.publish_many([]) == []
