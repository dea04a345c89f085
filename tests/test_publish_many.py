"""FrameProducer.publish_many: many frames routed and written with few round trips."""

from __future__ import annotations

from collections import Counter

import pytest
import redis

from pipeline import FrameProducer, FrameRejected
from pipeline.domain.keys import image_refs_key
from pipeline.processes.producer import PUBLISH_CHUNK
from pipeline.streams.keys import queue_keys

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


def test_a_write_redis_refuses_fails_its_own_frame_and_the_others_land(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    register_fake(redis_client, "face-a", (FACE,))
    register_fake(redis_client, "object-b", (OBJECT,))
    broken = queue_keys("frameflow", "frames.ready.object-b").stream
    redis_client.set(broken, "not a stream")  # every write to object-b's queue answers WRONGTYPE
    producer.router.claim_check_above = 0  # the fanned-out frame's image is stored, however small
    decisions = producer.publish_many(
        [spec(capabilities=(FACE,)), spec(capabilities=(OBJECT,)), spec(capabilities=(FACE, OBJECT)), spec()]
    )
    assert [decision.targets for decision in decisions] == [("face-a",), (), ("face-a",), ("face-a",)]
    assert [decision.refused is not None for decision in decisions] == [False, True, True, False]
    assert all("WRONGTYPE" in str(decision.refused) for decision in decisions[1:3])
    landed = [entry[b"frame_id"].decode() for entry in queue_entries(redis_client, "face-a")]
    assert landed == [decisions[0].frame_id, decisions[2].frame_id, decisions[3].frame_id]
    # The fanned-out frame's image was stored for two copies; the refused one gave its reference back.
    assert redis_client.get(image_refs_key("frameflow", decisions[2].frame_id)) == b"1"


def test_publish_of_one_frame_still_raises_what_redis_refused(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    register_fake(redis_client, "object-b", (OBJECT,))
    redis_client.set(queue_keys("frameflow", "frames.ready.object-b").stream, "not a stream")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        producer.publish(**spec(capabilities=(OBJECT,)))
