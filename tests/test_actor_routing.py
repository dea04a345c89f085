"""Plain Dramatiq actors whose messages are frames are routed like FrameProducer's."""

from __future__ import annotations

import dramatiq
import pytest
import redis

from middleware.routing import CapabilityRouter
from pipeline import Frame, ProcessorInfo, ProcessorRegistry, RedisStreamsBroker

from .processor_harness import register_fake


def test_plain_actor_send_is_routed_by_capability(redis_url: str, redis_client) -> None:
    broker = RedisStreamsBroker(redis_url, middleware=[CapabilityRouter(refresh_s=0)])
    ProcessorRegistry(redis_client).register(
        ProcessorInfo(
            processor_id="face-1",
            capabilities=("face_detection",),
            capacity=4,
            queue_name="frames.ready.face-1",
            actor_name="process_frame.face-1",
        ),
        ttl_s=30,
    )

    @dramatiq.actor(broker=broker, capabilities=["face_detection"])
    def camera_frame(frame: dict) -> None:
        raise AssertionError("a routed frame never runs the producer-side actor")

    frame = Frame(camera_id="porch", image=b"\xff\xd8jpeg", width=2, height=2)
    sent = camera_frame.send(frame.fields())

    assert sent.options["routed_to"] == ["face-1"]
    assert redis_client.xlen("default") == 0
    [(_, fields)] = redis_client.xrange("frames:ready:face-1")
    assert fields[b"camera_id"] == b"porch"
    assert fields[b"image"] == b"\xff\xd8jpeg"  # raw on the wire
    assert b"image_data" not in fields

    # A frame dict the seed's way (base64 image_data) goes on the wire raw too.
    seed_frame = {**frame.fields(), "frame_id": "seed-1"}
    del seed_frame["image"]
    seed_frame["image_data"] = "/9hqcGVn"
    camera_frame.send(seed_frame)
    [_, (_, fields)] = redis_client.xrange("frames:ready:face-1")
    assert fields[b"frame_id"] == b"seed-1" and fields[b"image"] == b"\xff\xd8jpeg"
    assert b"image_data" not in fields
    assert b'"actor_name":"process_frame.face-1"' in fields[b"message"]
    broker.close()


def test_a_routed_send_that_redis_refuses_raises_as_an_unrouted_one_does(redis_url: str, redis_client) -> None:
    broker = RedisStreamsBroker(redis_url, middleware=[CapabilityRouter(refresh_s=0)])
    register_fake(redis_client, "face-1", ("face_detection",))
    redis_client.set("frames:ready:face-1", "not a stream")

    @dramatiq.actor(broker=broker, capabilities=["face_detection"])
    def camera_frame(frame: dict) -> None:
        raise AssertionError("a routed frame never runs the producer-side actor")

    frame = Frame(camera_id="porch", image=b"\xff\xd8jpeg", width=2, height=2)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        camera_frame.send(frame.fields())
    broker.close()


def test_actor_without_capabilities_is_not_routed(broker: RedisStreamsBroker, redis_client) -> None:
    broker.add_middleware(CapabilityRouter(refresh_s=0))

    @dramatiq.actor
    def ordinary(value: int) -> None:
        pass

    ordinary.send(1)
    assert redis_client.xlen("default") == 1
