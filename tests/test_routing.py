"""The orchestrator (CapabilityRouter) against a real Redis: load balancing, fan-out,
dedupe, circuit breakers and parked frames (queue bounds: tests/test_queue_bounds.py).

Registry entries without workers (``register_fake``) make queue contents
inspectable; in-process ProcessorClients (``running``) show the full path.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
import redis

from middleware.breaker import CircuitBreaker
from pipeline import FrameProducer, ProcessorRegistry

from .processor_harness import (
    IMAGE,
    RecordingProcessor,
    publish,
    queue_entries,
    queued_frame_ids,
    register_fake,
    running,
    wait_for,
)

FACE, OBJECT, GESTURE = "face_detection", "object_detection", "gesture_detection"


def backlog(client: redis.Redis, processor_id: str, entries: int) -> None:
    """Pile up ``entries`` frames nobody has taken yet on a processor's queue."""
    for _ in range(entries):
        client.xadd(f"frames:ready:{processor_id}", {"frame_id": "old"})


# -- 2. three processors, two capabilities -----------------------------------------------------------


@pytest.fixture
def three_processors(redis_client: redis.Redis) -> None:
    """face-a and face-b detect faces; multi detects faces and objects."""
    register_fake(redis_client, "face-a", (FACE,))
    register_fake(redis_client, "face-b", (FACE,))
    register_fake(redis_client, "multi", (FACE, OBJECT))


@pytest.mark.usefixtures("three_processors")
def test_frames_avoid_the_processor_with_a_backlog(redis_client: redis.Redis, producer: FrameProducer) -> None:
    backlog(redis_client, "face-a", 30)  # load 3.0: thirty frames waiting for ten slots
    decisions = [publish(producer, [FACE]) for _ in range(10)]
    assert all(len(decision.targets) == 1 for decision in decisions)
    counts = Counter(decision.targets[0] for decision in decisions)
    assert counts == {"face-b": 5, "multi": 5}
    assert len(queue_entries(redis_client, "face-a")) == 30  # nothing new
    assert queued_frame_ids(redis_client, "face-b") == [d.frame_id for d in decisions if d.targets == ("face-b",)]


def test_frames_are_shared_by_capacity(redis_client: redis.Redis, producer: FrameProducer) -> None:
    register_fake(redis_client, "face-small", (FACE,), capacity=1)
    register_fake(redis_client, "face-big", (FACE,), capacity=4)
    decisions = [publish(producer, [FACE]) for _ in range(10)]
    counts = Counter(decision.targets[0] for decision in decisions)
    assert counts == {"face-big": 8, "face-small": 2}
    assert len(queue_entries(redis_client, "face-big")) == 8
    assert len(queue_entries(redis_client, "face-small")) == 2


def test_a_busy_processor_gets_no_frames_while_an_idle_one_is_free(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    producer.router.refresh_s = 0  # measure the real load for every frame
    busy = RecordingProcessor("a-busy", [FACE], redis_url, capacity=1)
    idle = RecordingProcessor("b-idle", [FACE], redis_url, capacity=1)
    busy.gate.clear()
    with running(busy, redis_client), running(idle, redis_client):
        first = publish(producer, [FACE])
        assert first.targets == ("a-busy",)  # equal loads: the tie goes by id
        assert busy.started.wait(10), "a-busy never started its frame"
        for n in range(5):
            decision = publish(producer, [FACE])
            assert decision.targets == ("b-idle",), f"frame {n} went to {decision.targets}"
            wait_for(lambda n=n: idle.stats.processed == n + 1, what=f"b-idle to process frame {n}")
            wait_for(lambda: not queue_entries(redis_client, "b-idle"), what="b-idle's queue to drain")
        busy.gate.set()
        wait_for(lambda: busy.stats.processed == 1, what="a-busy to finish")
    assert busy.frame_ids() == [first.frame_id]
    assert len(idle.frame_ids()) == 5


@pytest.mark.usefixtures("three_processors")
def test_a_processor_with_both_capabilities_receives_the_frame_once(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    decision = publish(producer, [FACE, OBJECT])
    assert decision.targets == ("multi",)
    assert queued_frame_ids(redis_client, "multi") == [decision.frame_id]
    assert queue_entries(redis_client, "face-a") == queue_entries(redis_client, "face-b") == []

    repeated = publish(producer, [FACE, FACE])
    assert len(repeated.targets) == 1
    queued = [queued_frame_ids(redis_client, pid) for pid in ("face-a", "face-b", "multi")]
    assert sum(ids.count(repeated.frame_id) for ids in queued) == 1


@pytest.mark.usefixtures("three_processors")
def test_a_frame_needing_two_capabilities_fans_out_to_two_processors(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    backlog(redis_client, "multi", 20)  # multi is busy: faces go elsewhere, objects can only go to multi
    decision = publish(producer, [FACE, OBJECT])
    assert decision.targets == ("face-a", "multi")
    assert decision.parked == () and decision.reason is None
    assert queued_frame_ids(redis_client, "face-a") == [decision.frame_id]
    assert queued_frame_ids(redis_client, "multi")[-1] == decision.frame_id
    assert queued_frame_ids(redis_client, "multi").count(decision.frame_id) == 1
    assert queue_entries(redis_client, "face-b") == []


def test_fan_out_with_real_processors(redis_url: str, redis_client: redis.Redis, producer: FrameProducer) -> None:
    faces = RecordingProcessor("faces-1", [FACE], redis_url)
    objects = RecordingProcessor("objects-1", [OBJECT], redis_url)
    with running(faces, redis_client), running(objects, redis_client):
        decision = publish(producer, [FACE, OBJECT])
        assert set(decision.targets) == {"faces-1", "objects-1"}
        for processor in (faces, objects):
            wait_for(lambda p=processor: p.frame_ids() == [decision.frame_id], what=f"{processor.processor_id}")
            assert processor.frames[0][b"image_data"] == base64.b64encode(IMAGE)


# -- 3. circuit breaker ------------------------------------------------------------------------------


def breaker_of(client: redis.Redis, processor_id: str) -> tuple[str, float]:
    info = ProcessorRegistry(client).get(processor_id)
    assert info is not None, f"{processor_id} is not registered"
    return info.breaker, info.breaker_since


def test_breaker_opens_on_failures_stops_routing_and_closes_after_a_good_probe(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    producer.router.refresh_s = 0
    producer.router.breaker_cooldown_s = 60.0  # no probe while the open breaker is observed
    flaky = RecordingProcessor("a-flaky", [FACE], redis_url, health_port=0)
    flaky._breaker = CircuitBreaker(flaky._publish_breaker, failure_threshold=2, window_s=30)
    steady = RecordingProcessor("b-steady", [FACE], redis_url)
    flaky.failing.set()
    with running(flaky, redis_client), running(steady, redis_client):
        for n in range(2):  # both idle: ties go to a-flaky, which fails each frame
            assert publish(producer, [FACE]).targets == ("a-flaky",)
            wait_for(lambda n=n: flaky.stats.failed == n + 1, what=f"failure {n + 1}")
            wait_for(lambda: not queue_entries(redis_client, "a-flaky"), what="the failed frame to leave the queue")
        state, opened_at = wait_for(
            lambda: breaker_of(redis_client, "a-flaky")[0] == "open" and breaker_of(redis_client, "a-flaky"),
            what="the breaker to open in the registry",
        )
        assert state == "open"
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(f"http://127.0.0.1:{flaky._health.port}/health", timeout=5)
        assert unhealthy.value.code == 503
        health = json.loads(unhealthy.value.read())
        assert (health["breaker"], health["failed"]) == ("open", 2)
        assert "failing on purpose" in health["last_error"]

        # Open: frames go to the steady processor, none to the flaky one.
        during = [publish(producer, [FACE]) for _ in range(3)]
        assert [decision.targets for decision in during] == [("b-steady",)] * 3
        wait_for(lambda: steady.stats.processed == 3, what="b-steady to process the frames")
        wait_for(lambda: not queue_entries(redis_client, "b-steady"), what="b-steady's queue to drain")
        assert flaky.calls == 2

        # After the cool-down one probe goes through; it succeeds and the breaker closes.
        flaky.failing.clear()
        cooldown = producer.router.breaker_cooldown_s = 0.3
        wait_for(lambda: time.time() - opened_at > cooldown, what="the cool-down")
        probe = publish(producer, [FACE])
        assert probe.targets == ("a-flaky",)
        wait_for(lambda: breaker_of(redis_client, "a-flaky")[0] == "closed", what="the breaker to close")
        assert flaky.frame_ids()[-1] == probe.frame_id
        assert flaky.stats.processed == 1

        wait_for(lambda: not queue_entries(redis_client, "a-flaky"), what="a-flaky's queue to drain")
        assert publish(producer, [FACE]).targets == ("a-flaky",)  # closed: routed normally again


def test_a_failed_probe_opens_the_breaker_again(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    producer.router.refresh_s = 0
    producer.router.breaker_cooldown_s = 60.0
    flaky = RecordingProcessor("flaky", [FACE], redis_url)
    flaky._breaker = CircuitBreaker(flaky._publish_breaker, failure_threshold=1, window_s=30)
    flaky.failing.set()
    with running(flaky, redis_client):
        assert publish(producer, [FACE]).targets == ("flaky",)
        _, opened_at = wait_for(
            lambda: breaker_of(redis_client, "flaky")[0] == "open" and breaker_of(redis_client, "flaky"),
            what="the breaker to open",
        )
        blocked = publish(producer, [FACE])
        assert blocked.targets == ()
        assert blocked.parked == (FACE,)
        assert blocked.reason == "no live processor for capability 'face_detection'"
        cooldown = producer.router.breaker_cooldown_s = 1.0
        wait_for(lambda: time.time() - opened_at > cooldown, what="the cool-down")
        probe = publish(producer, [FACE])
        assert probe.targets == ("flaky",)
        assert publish(producer, [FACE]).targets == ()  # one probe per cool-down, not a flood
        wait_for(lambda: probe.frame_id in flaky.frame_ids(), what="the probe to be tried")
        wait_for(
            lambda: breaker_of(redis_client, "flaky")[1] > opened_at,
            what="the failed probe to reopen the breaker",
        )
        assert breaker_of(redis_client, "flaky")[0] == "open"


# -- 4. parked frames --------------------------------------------------------------------------------


def parked(client: redis.Redis, capability: str) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in client.xrange(f"frameflow:parked:{{{capability}}}")]


def test_unroutable_frame_is_parked_with_its_reason_and_delivered_on_registration(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    decision = publish(producer, [GESTURE], max_age_ms=60_000)
    assert decision.targets == ()
    assert decision.parked == (GESTURE,)
    assert decision.reason == "no live processor for capability 'gesture_detection'"
    [entry] = parked(redis_client, GESTURE)
    assert entry[b"frame_id"] == decision.frame_id.encode()
    assert entry[b"parked_reason"] == decision.reason.encode()

    gestures = RecordingProcessor("gestures-1", [GESTURE], redis_url)
    with running(gestures, redis_client):
        wait_for(lambda: gestures.frame_ids() == [decision.frame_id], what="the parked frame to be delivered")
    assert gestures.frames[0][b"image_data"] == base64.b64encode(IMAGE)
    assert parked(redis_client, GESTURE) == []


def test_partly_routable_frame_goes_where_it_can_and_parks_the_rest(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    faces = RecordingProcessor("faces-1", [FACE], redis_url)
    gestures = RecordingProcessor("gestures-1", [GESTURE], redis_url)
    with running(faces, redis_client):
        decision = publish(producer, [FACE, GESTURE], max_age_ms=60_000)
        assert decision.targets == ("faces-1",)
        assert decision.parked == (GESTURE,)
        assert decision.reason == "no live processor for capability 'gesture_detection'"
        wait_for(lambda: faces.frame_ids() == [decision.frame_id], what="faces-1 to get the frame")
        with running(gestures, redis_client):
            wait_for(lambda: gestures.frame_ids() == [decision.frame_id], what="the parked frame to be delivered")
    for processor in (faces, gestures):
        assert processor.frames[0][b"image_data"] == base64.b64encode(IMAGE)
    assert faces.calls == 1  # releasing the parked copy did not send it to faces-1 again


def test_parked_frames_past_their_max_age_are_dropped_and_counted(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    old = publish(producer, [GESTURE], timestamp=time.time() - 10, max_age_ms=1000)
    fresh = publish(producer, [GESTURE], max_age_ms=60_000)
    assert old.parked == fresh.parked == (GESTURE,)
    assert len(parked(redis_client, GESTURE)) == 2

    gestures = RecordingProcessor("gestures-1", [GESTURE], redis_url)
    with running(gestures, redis_client):
        wait_for(lambda: gestures.frame_ids() == [fresh.frame_id], what="the fresh parked frame to be delivered")
    assert old.frame_id not in gestures.frame_ids()
    assert redis_client.hget("frameflow:drops:parked", "stale") == b"1"
    assert parked(redis_client, GESTURE) == []


# -- 7. many processors: an even spread, and a choice that follows what changes --------------------


def test_frames_are_spread_evenly_over_fifty_processors_by_capacity(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    small = [f"face-s{n:02d}" for n in range(25)]
    big = [f"face-b{n:02d}" for n in range(25)]
    for name in small:
        register_fake(redis_client, name, (FACE,), capacity=1)
    for name in big:
        register_fake(redis_client, name, (FACE,), capacity=4)
    decisions = [publish(producer, [FACE]) for _ in range(500)]  # four frames per unit of capacity
    counts = Counter(target for decision in decisions for target in decision.targets)
    assert counts == {**dict.fromkeys(small, 4), **dict.fromkeys(big, 16)}
    queued = {name: len(queue_entries(redis_client, name)) for name in small + big}
    assert queued == {**dict.fromkeys(small, 4), **dict.fromkeys(big, 16)}


def settle_on(producer: FrameProducer, allowed: set[str], what: str) -> None:
    """Frames go only to ``allowed`` within the deadline (the router's refresh), and keep doing so."""

    def ten_in_a_row() -> bool:
        return all(set(publish(producer, [FACE]).targets) <= allowed for _ in range(10))

    wait_for(ten_in_a_row, what=f"frames to {what}")
    following = [publish(producer, [FACE]).targets for _ in range(20)]
    assert all(len(targets) == 1 and set(targets) <= allowed for targets in following), following


def test_the_choice_follows_loads_and_processors_that_drain_leave_expire_or_join(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    for name in ("face-a", "face-b", "face-c"):
        register_fake(redis_client, name, (FACE,), capacity=1)
    registry = ProcessorRegistry(redis_client)
    assert {publish(producer, [FACE]).targets[0] for _ in range(3)} == {"face-a", "face-b", "face-c"}

    backlog(redis_client, "face-a", 1000)  # another producer's frames: only the refresh tells
    settle_on(producer, {"face-b", "face-c"}, "avoid face-a's backlog")
    registry.update("face-b", draining=True)
    settle_on(producer, {"face-c"}, "leave face-b, draining")
    registry.update("face-b", draining=False)
    registry.deregister("face-c")
    settle_on(producer, {"face-b"}, "leave face-c, deregistered")
    redis_client.delete("frameflow:processor:face-b")  # its entry expired: nothing in the registry says so
    settle_on(producer, {"face-a"}, "leave face-b, expired, for the one left")
    register_fake(redis_client, "face-d", (FACE,), capacity=1)
    settle_on(producer, {"face-d"}, "reach face-d, which just registered")


def test_a_router_reads_every_registry_entry_again_only_when_the_registry_changed(
    redis_client: redis.Redis, producer: FrameProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("face-a", "face-b"):
        register_fake(redis_client, name, (FACE,))
    reads: list[int] = []
    read_entries = ProcessorRegistry.list

    def counted(registry: ProcessorRegistry, **options: bool) -> list:
        reads.append(1)
        return read_entries(registry, **options)

    monkeypatch.setattr(ProcessorRegistry, "list", counted)
    producer.router.refresh_s = 0  # a refresh before every frame: loads measured, entries only asked about
    for _ in range(10):
        publish(producer, [FACE])
    ProcessorRegistry(redis_client).heartbeat("face-a", ttl_s=60, processed=1)  # stats: no change to routing
    for _ in range(10):
        publish(producer, [FACE])
    assert len(reads) == 1
    assert len(queue_entries(redis_client, "face-a")) == len(queue_entries(redis_client, "face-b")) == 10
    ProcessorRegistry(redis_client).update("face-a", draining=True)
    assert [publish(producer, [FACE]).targets for _ in range(3)] == [("face-b",)] * 3
    assert len(reads) == 2
