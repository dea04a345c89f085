"""Every key that grows under overload is bounded: claim-checked images live as long as the
copies that need them, result streams and parked streams are capped, and every drop is counted.

Registry entries without workers (``register_fake``) keep queues inspectable; in-process
ProcessorClients (``running``) show the full path: process, ack, release.
"""

from __future__ import annotations

import contextlib
import time

import pytest
import redis

from middleware.routing import CLAIM_CHECK_ABOVE, CapabilityRouter
from pipeline import FrameProducer, ProcessorRegistry
from pipeline.domain.keys import image_key, image_refs_key, parked_drops_key, parked_key
from pipeline.processes.queue_metrics import PipelineCollector
from pipeline.processes.scheduler import PipelineScheduler
from pipeline.settings import Settings
from pipeline.streams.broker import RedisStreamsBroker
from pipeline.streams.keys import queue_keys

from .processor_harness import (
    IMAGE,
    RecordingProcessor,
    drops,
    publish,
    queue_entries,
    register_fake,
    running,
    wait_for,
)

FACE, OBJECT, GESTURE, SPARE = "face_detection", "object_detection", "gesture_detection", "spare"

#: Over the router's default limit: claim-checked when it fans out or is parked, with the default settings.
LARGE_IMAGE = bytes(range(256)) * (CLAIM_CHECK_ABOVE // 256 + 1)


@pytest.fixture
def producer(redis_url: str, redis_client: redis.Redis):
    """Frames worth a minute: an image that goes within a test's seconds was released, not expired.
    Every image that fans out is claim-checked, however small: these tests are about the stored copy."""
    producer = FrameProducer(redis_url, max_age_ms=60_000)
    producer.router.claim_check_above = 0
    yield producer
    producer.close()


def image_of(client: redis.Redis, frame_id: str) -> tuple[bytes | None, int | None]:
    """A frame's claim-checked image and its reference count (None where the key is gone)."""
    count = client.get(image_refs_key("frameflow", frame_id))
    return client.get(image_key("frameflow", frame_id)), None if count is None else int(count)


def image_gone(client: redis.Redis, frame_id: str) -> bool:
    return image_of(client, frame_id) == (None, None)


# -- processed copies ----------------------------------------------------------------------------


def test_the_image_goes_when_the_last_of_its_fan_out_copies_is_acked(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    capabilities = {"faces-1": FACE, "objects-1": OBJECT, "gestures-1": GESTURE}
    processors = {pid: RecordingProcessor(pid, [capability], redis_url) for pid, capability in capabilities.items()}
    for processor in processors.values():
        processor.gate.clear()  # every copy is held once it started
    with contextlib.ExitStack() as stack:
        for processor in processors.values():
            stack.enter_context(running(processor, redis_client))
        decision = publish(producer, list(capabilities.values()))
        for processor in processors.values():
            wait_for(processor.started.is_set, what=f"{processor.processor_id} to start its copy")
        assert image_of(redis_client, decision.frame_id) == (IMAGE, 3)  # stored once, raw
        for processor_id in ("faces-1", "objects-1"):
            processors[processor_id].gate.set()
            wait_for(lambda p=processor_id: not queue_entries(redis_client, p), what=f"{processor_id}'s ack")
        assert image_of(redis_client, decision.frame_id) == (IMAGE, 1)
        processors["gestures-1"].gate.set()
        wait_for(lambda: image_gone(redis_client, decision.frame_id), what="the image to go with the last ack")
    assert all(processor.frame_ids() == [decision.frame_id] for processor in processors.values())


def test_a_retry_keeps_the_image_and_a_dead_letter_releases_it(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    class RetriedOnce(RecordingProcessor):
        max_retries = 1

    register_fake(redis_client, "objects-1", (OBJECT,))  # its copy waits: the image is shared, claim-checked
    processor = RetriedOnce("faces-1", [FACE], redis_url)
    processor.failing.set()
    processor.gate.clear()
    with running(processor, redis_client):
        retried = publish(producer, [FACE, OBJECT])
        wait_for(processor.started.is_set, what="the first attempt")
        processor.started.clear()
        processor.gate.set()
        processor.gate.clear()  # the retry waits at least min_backoff (100 ms): it will find the gate shut
        wait_for(processor.started.is_set, what="the retry")
        assert image_of(redis_client, retried.frame_id)[1] == 2  # the failed attempt released nothing
        processor.failing.clear()
        processor.gate.set()
        wait_for(lambda: image_of(redis_client, retried.frame_id)[1] == 1, what="the retry's ack to release")
        assert processor.frame_ids() == [retried.frame_id] * 2

        processor.failing.set()  # fails twice: dead-lettered, done for good
        dead = publish(producer, [FACE, OBJECT])
        dead_letters = queue_keys("frameflow", processor.queue_name).dead
        wait_for(lambda: redis_client.xlen(dead_letters) == 1, what="the dead letter")
        wait_for(lambda: image_of(redis_client, dead.frame_id)[1] == 1, what="the dead letter to release")
    redis_client.delete(queue_keys("frameflow", "frames.ready.objects-1").stream)


def test_a_stale_copy_releases_its_image_when_it_is_skipped(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    class Impatient(RecordingProcessor):
        max_age_ms = 5000  # tighter than the frame's own minute

    register_fake(redis_client, "faces-1", (FACE,))
    register_fake(redis_client, "objects-1", (OBJECT,))
    # Fanned out (claim-checked, two references), ten seconds old: stale for faces-1 only.
    decision = publish(producer, [FACE, OBJECT], timestamp=time.time() - 10, max_age_ms=60_000)
    assert image_of(redis_client, decision.frame_id)[1] == 2
    processor = Impatient("faces-1", [FACE], redis_url)
    with running(processor, redis_client):
        wait_for(lambda: drops(redis_client, "faces-1").get("stale") == 1, what="the stale copy to be skipped")
        wait_for(lambda: image_of(redis_client, decision.frame_id)[1] == 1, what="its reference to be released")
    assert processor.frame_ids() == []


# -- dropped copies --------------------------------------------------------------------------------


def test_copies_the_queue_bound_drops_release_their_images(redis_client: redis.Redis, producer: FrameProducer) -> None:
    register_fake(redis_client, "faces-1", (FACE,), queue_bound=2, overflow="drop_oldest")
    register_fake(redis_client, "objects-1", (OBJECT,), queue_bound=1, overflow="reject_newest")
    register_fake(redis_client, "spare-1", (SPARE,))  # unbounded: its copies keep each image claim-checked
    first, second, third = (publish(producer, [FACE, SPARE]) for _ in range(3))
    assert drops(redis_client, "faces-1") == {"bound": 1}
    assert image_of(redis_client, first.frame_id)[1] == 1  # its faces-1 copy was evicted and released
    assert image_of(redis_client, second.frame_id)[1] == image_of(redis_client, third.frame_id)[1] == 2

    kept = publish(producer, [FACE, OBJECT])  # two copies; faces-1 drops `second` to make room
    rejected = publish(producer, [FACE, OBJECT])  # faces-1 drops `third`; objects-1 is full and refuses it
    assert image_of(redis_client, second.frame_id)[1] == image_of(redis_client, third.frame_id)[1] == 1
    assert image_of(redis_client, kept.frame_id)[1] == 2
    assert image_of(redis_client, rejected.frame_id)[1] == 1  # only its faces-1 copy was stored
    assert rejected.dropped == 1 and drops(redis_client, "objects-1") == {"bound": 1}
    assert drops(redis_client, "faces-1") == {"bound": 3}
    waiting = [entry[b"frame_id"].decode() for entry in queue_entries(redis_client, "faces-1")]
    assert waiting == [kept.frame_id, rejected.frame_id]

    redis_client.delete(queue_keys("frameflow", "frames.ready.spare-1").stream)  # each spare copy, dropped
    producer.router.release(producer.broker, [image_key("frameflow", first.frame_id).encode()])
    assert image_gone(redis_client, first.frame_id)  # the last reference takes the image with it


def test_a_re_routed_copy_keeps_its_reference_and_shares_it_with_the_copies_it_becomes(
    redis_client: redis.Redis, producer: FrameProducer, redis_url: str
) -> None:
    register_fake(redis_client, "multi-old", (FACE, GESTURE))
    register_fake(redis_client, "objects-1", (OBJECT,))
    decision = publish(producer, [FACE, GESTURE, OBJECT])
    assert image_of(redis_client, decision.frame_id)[1] == 2
    redis_client.delete(ProcessorRegistry(redis_client).key("multi-old"))  # its heartbeat stopped
    register_fake(redis_client, "faces-new", (FACE,))
    register_fake(redis_client, "gestures-new", (GESTURE,))
    broker = RedisStreamsBroker(redis_url, middleware=[CapabilityRouter()])
    try:
        assert PipelineScheduler(broker).reap("multi-old") == 1
    finally:
        broker.close()
    for processor_id in ("faces-new", "gestures-new", "objects-1"):
        assert [entry[b"frame_id"].decode() for entry in queue_entries(redis_client, processor_id)] == [
            decision.frame_id
        ]
    assert image_of(redis_client, decision.frame_id)[1] == 3  # one copy became two


# -- capped streams --------------------------------------------------------------------------------


def test_result_streams_are_capped(redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env({}).results_maxlen == 10_000
    monkeypatch.setenv("FRAMEFLOW_RESULTS_MAXLEN", "20")
    processor = RecordingProcessor("faces-1", [FACE], redis_url)
    processor.queue_bound = 0  # every frame is processed: only the result stream's cap drops anything
    frames = 300
    with running(processor, redis_client):
        producer = FrameProducer(redis_url)
        try:
            spec = {"camera_id": "cam-1", "image": IMAGE, "capabilities": [FACE], "width": 8, "height": 8}
            newest = producer.publish_many([spec] * frames)[-1].frame_id
        finally:
            producer.close()
        wait_for(lambda: len(processor.frames) == frames, what="every frame to be processed")
        wait_for(lambda: not queue_entries(redis_client, "faces-1"), what="every ack (results go first)")
    length = redis_client.xlen("results:faces-1")
    # MAXLEN ~ trims whole stream nodes (100 entries at most): never much past the cap, far below the total.
    assert 20 <= length <= 20 + 100 < frames
    kept = {fields[b"frame_id"].decode() for _, fields in redis_client.xrange("results:faces-1")}
    assert newest in kept  # the oldest results went, never the newest


def test_parked_streams_keep_their_bound_and_count_what_they_drop(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings.from_env({}).parked_bound == 1000
    monkeypatch.setenv("FRAMEFLOW_PARKED_BOUND", "3")
    producer = FrameProducer(redis_url, max_age_ms=60_000)
    try:
        parked = [publish(producer, ["nobody"], image=LARGE_IMAGE) for _ in range(5)]
    finally:
        producer.close()
    assert all(decision.parked == ("nobody",) for decision in parked)
    waiting = [entry[b"frame_id"].decode() for _, entry in redis_client.xrange(parked_key("frameflow", "nobody"))]
    assert waiting == [decision.frame_id for decision in parked[2:]]  # the oldest two went
    assert redis_client.hgetall(parked_drops_key("frameflow")) == {b"overflow": b"2"}
    assert all(image_gone(redis_client, decision.frame_id) for decision in parked[:2])
    assert all(image_of(redis_client, decision.frame_id)[1] == 1 for decision in parked[2:])

    collected = {
        (sample.labels["queue"], sample.labels["reason"]): sample.value
        for metric in PipelineCollector(redis_client).collect()
        if metric.name == "frameflow_frames_dropped"
        for sample in metric.samples
    }
    assert collected[("parked", "overflow")] == 2
    assert collected[("parked", "unroutable")] == 0
