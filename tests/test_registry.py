"""The processor registry against a real Redis."""

from __future__ import annotations

import time

import pytest

from pipeline.domain.registry import BREAKER_OPEN, ProcessorInfo, ProcessorRegistry
from pipeline.domain.registry_view import RegistryView
from tests.polling import wait_until


def face(processor_id: str = "face-1", **changes) -> ProcessorInfo:
    values = {
        "processor_id": processor_id,
        "capabilities": ("face_detection", "face_recognition"),
        "capacity": 10,
        "queue_name": f"frames.ready.{processor_id}",
        "actor_name": f"process_frame.{processor_id}",
        "result_stream": "faces:detected",
        "version": "1.0",
    }
    values.update(changes)
    return ProcessorInfo(**values)


@pytest.fixture
def registry(redis_client) -> ProcessorRegistry:
    return ProcessorRegistry(redis_client)


def test_registered_processor_is_listed_with_what_it_said(registry: ProcessorRegistry) -> None:
    registry.register(face(), ttl_s=30)
    [info] = registry.list()
    assert info.processor_id == "face-1"
    assert info.capabilities == ("face_detection", "face_recognition")
    assert info.capacity == 10
    assert info.result_stream == "faces:detected"
    assert info.health_endpoint is None
    assert info.alive


def test_lookup_by_capability(registry: ProcessorRegistry) -> None:
    registry.register(face("face-1"), ttl_s=30)
    registry.register(face("objects-1", capabilities=("object_detection",)), ttl_s=30)
    assert [info.processor_id for info in registry.live_with("object_detection")] == ["objects-1"]
    assert [info.processor_id for info in registry.live_with("face_detection")] == ["face-1"]
    assert registry.live_with("gesture_detection") == []


def test_processor_without_heartbeats_is_dead(registry: ProcessorRegistry) -> None:
    registry.register(face(), ttl_s=0.2)
    deadline = time.monotonic() + 5
    while registry.list() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert registry.list() == []
    assert registry.dead_ids() == ["face-1"]
    assert registry.heartbeat("face-1", ttl_s=30, processed=1) is False
    assert registry.get("face-1") is None  # a heartbeat alone does not resurrect it


def test_heartbeat_keeps_it_alive_and_records_stats(registry: ProcessorRegistry) -> None:
    registry.register(face(), ttl_s=30)
    assert registry.heartbeat("face-1", ttl_s=30, in_flight=3, processed=42, failed=1, latency_ms=12.5)
    info = registry.get("face-1")
    assert info is not None
    assert (info.in_flight, info.processed, info.failed, info.latency_ms) == (3, 42, 1, 12.5)


def test_reregistering_after_a_crash_just_works(registry: ProcessorRegistry) -> None:
    registry.register(face(pid=111), ttl_s=30)
    registry.heartbeat("face-1", ttl_s=30, processed=99)
    registry.register(face(pid=222), ttl_s=30)
    info = registry.get("face-1")
    assert info is not None and info.pid == 222 and info.processed == 0


def test_a_heartbeat_lists_its_processor_again_after_a_reaping_dropped_it(registry: ProcessorRegistry) -> None:
    """A scheduler decided face-1 was dead (its entry had lapsed in a failover) and forgot its id just
    after it registered again: its next heartbeat puts it back where routers and schedulers look."""
    registry.register(face(), ttl_s=30)
    registry.forget(["face-1"])
    assert registry.list() == []
    assert registry.heartbeat("face-1", ttl_s=30, processed=1)
    assert [info.processor_id for info in registry.list()] == ["face-1"]


def test_a_partial_entry_is_ignored_not_a_traceback(registry: ProcessorRegistry, redis_client) -> None:
    """A hash with stats and no identity (what a heartbeat on a lapsed entry wrote before it deleted
    it again) is left out: a router reading it raised TypeError in the middle of a publish."""
    registry.register(face("face-2"), ttl_s=30)
    redis_client.hset("frameflow:processor:face-1", mapping={"heartbeat_at": "1", "processed": "3"})
    redis_client.sadd(registry.index_key, "face-1")
    assert [info.processor_id for info in registry.list()] == ["face-2"]
    assert registry.get("face-1") is None


def test_breaker_state_is_visible(registry: ProcessorRegistry) -> None:
    registry.register(face(), ttl_s=30)
    registry.update("face-1", breaker=BREAKER_OPEN)
    info = registry.get("face-1")
    assert info is not None and info.breaker == BREAKER_OPEN


def test_deregister_removes_it_everywhere(registry: ProcessorRegistry) -> None:
    registry.register(face(), ttl_s=30)
    assert registry.deregister("face-1") is True
    assert registry.list(include_dead=True) == []


def test_changes_are_announced(registry: ProcessorRegistry, redis_client) -> None:
    pubsub = redis_client.pubsub()
    pubsub.subscribe(registry.channel)
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    registry.register(face(), ttl_s=30)
    message = pubsub.get_message(timeout=2)
    assert message is not None and message["data"] == b"register face-1"
    pubsub.close()


def test_every_change_stamps_a_new_version_and_a_heartbeat_does_not(registry: ProcessorRegistry) -> None:
    seen = [registry.version()]
    registry.register(face(), ttl_s=30)
    seen.append(registry.version())
    assert registry.heartbeat("face-1", ttl_s=30, processed=7)
    assert registry.version() == seen[-1]
    registry.update("face-1", draining=True)
    seen.append(registry.version())
    registry.deregister("face-1")
    seen.append(registry.version())
    assert seen[0] is None and len(set(seen)) == 4


def ids(processors: list[ProcessorInfo]) -> list[str]:
    return [info.processor_id for info in processors]


def test_a_view_is_kept_until_an_entry_changes_leaves_or_expires(registry: ProcessorRegistry, redis_client) -> None:
    registry.register(face("face-1"), ttl_s=30)
    view = RegistryView(registry)
    first = view.live()
    assert ids(first) == ["face-1"]
    registry.heartbeat("face-1", ttl_s=30, processed=5)
    assert view.live() is first  # nothing routing reads changed: the entries are not read again

    registry.update("face-1", draining=True)
    assert [(info.processor_id, info.draining) for info in view.live()] == [("face-1", True)]
    registry.register(face("face-2"), ttl_s=30)
    assert ids(view.live()) == ["face-1", "face-2"]
    redis_client.delete(registry.key("face-2"))  # expired: nothing stamps a version
    assert ids(view.live()) == ["face-1"]
    registry.deregister("face-1")
    assert view.live() == []


def test_a_view_sees_an_entry_written_without_a_version_within_its_max_age(
    registry: ProcessorRegistry, redis_client
) -> None:
    view, patient = RegistryView(registry, max_age_s=0.3), RegistryView(registry, max_age_s=600)
    assert view.live() == patient.live() == []
    for name in ("old-1", "old-2"):  # written as by a frameflow before versions: the entry and the index, no version
        redis_client.hset(registry.key(name), mapping=face(name).to_fields())
        redis_client.sadd(registry.index_key, name)
    wait_until(lambda: ids(view.live()) == ["old-1", "old-2"], 5, "the view to read the unversioned entries")
    assert patient.live() == []
    patient.forget()  # told (a processor just registered): read everything now
    assert ids(patient.live()) == ["old-1", "old-2"]
