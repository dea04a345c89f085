"""The scheduler's jobs, and ProcessorClient details the orchestrator tests leave out."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from middleware.routing import CapabilityRouter
from pipeline import FrameProducer, ProcessorClient, RedisStreamsBroker
from pipeline.processes.processor import SEED_DEFAULT_REDIS_URL, _resolve_redis_url
from pipeline.processes.scheduler import PipelineScheduler
from pipeline.streams.embedded import EmbeddedRedis
from pipeline.streams.wire import decode_entry
from pipeline.version import __version__
from tests.processor_harness import publish, register_fake, running, wait_for


@pytest.fixture
def scheduler(redis_url: str, redis_client) -> PipelineScheduler:
    broker = RedisStreamsBroker(redis_url, middleware=[CapabilityRouter(refresh_s=0)])
    yield PipelineScheduler(broker, interval_s=0.5)
    broker.close()


def test_health_heartbeat_reports_processors_and_backlogs(
    scheduler: PipelineScheduler, redis_url, redis_client
) -> None:
    register_fake(redis_client, "face-1", ("face_detection",))
    producer = FrameProducer(redis_url)
    for _ in range(3):
        publish(producer, ["face_detection"])
    scheduler.emit_health()
    [(_, entry)] = redis_client.xrange("frameflow:health")
    assert entry[b"processors_up"] == b"1"
    assert entry[b"processors_down"] == b"0"
    assert json.loads(entry[b"up"]) == ["face-1"]
    assert json.loads(entry[b"backlog"]) == {"face-1": 3}
    producer.close()


def test_two_schedulers_never_reroute_the_same_backlog(scheduler: PipelineScheduler, redis_url, redis_client) -> None:
    register_fake(redis_client, "gone", ("face_detection",))
    producer = FrameProducer(redis_url, max_age_ms=60_000)
    publish(producer, ["face_detection"])
    redis_client.delete("frameflow:processor:gone")  # its registration expired
    redis_client.set("frameflow:reaping:gone", "1")  # another scheduler holds the lock
    assert scheduler.reap_dead() == {}
    assert redis_client.xlen("frames:ready:gone") == 1
    redis_client.delete("frameflow:reaping:gone")
    register_fake(redis_client, "peer", ("face_detection",))
    assert scheduler.reap_dead() == {"gone": 1}
    assert redis_client.xlen("frames:ready:peer") == 1
    assert scheduler.reap_dead() == {}  # forgotten: nothing to do twice
    producer.close()


def test_a_dead_processors_pending_retries_are_rerouted_not_deleted(
    scheduler: PipelineScheduler, redis_url, redis_client
) -> None:
    register_fake(redis_client, "gone", ("face_detection",))
    producer = FrameProducer(redis_url, max_age_ms=60_000)
    retried, queued = publish(producer, ["face_detection"]), publish(producer, ["face_detection"])
    [(entry_id, fields), _] = redis_client.xrange("frames:ready:gone")
    redis_client.xdel("frames:ready:gone", entry_id)  # its first attempt failed: a retry waits a minute
    scheduler.broker.enqueue(decode_entry(fields), delay=60_000)
    assert redis_client.zcard("frameflow:delayed:{frames:ready:gone}") == 1
    redis_client.delete("frameflow:processor:gone")
    register_fake(redis_client, "peer", ("face_detection",))

    assert scheduler.reap_dead() == {"gone": 2}
    moved = [decode_entry(fields).args[0]["frame_id"] for _, fields in redis_client.xrange("frames:ready:peer")]
    assert sorted(moved) == sorted([retried.frame_id, queued.frame_id])
    assert not redis_client.exists("frames:ready:gone", "frameflow:delayed:{frames:ready:gone}")
    producer.close()


def test_a_dead_processors_queue_written_to_while_reaped_is_read_again(
    scheduler: PipelineScheduler, redis_url, redis_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_fake(redis_client, "gone", ("face_detection",))
    producer = FrameProducer(redis_url, max_age_ms=60_000)
    first = publish(producer, ["face_detection"])
    [(_, late_fields)] = redis_client.xrange("frames:ready:gone")
    redis_client.delete("frameflow:processor:gone")
    register_fake(redis_client, "peer", ("face_detection",))
    reroute_entries = scheduler._reroute_entries
    late_writes = [late_fields]

    def a_router_writes_meanwhile(*args):  # a router whose cached registry still had "gone"
        moved = reroute_entries(*args)
        if late_writes:
            redis_client.xadd("frames:ready:gone", late_writes.pop())
        return moved

    monkeypatch.setattr(scheduler, "_reroute_entries", a_router_writes_meanwhile)
    assert scheduler.reap_dead() == {"gone": 2}
    moved = [decode_entry(fields).args[0]["frame_id"] for _, fields in redis_client.xrange("frames:ready:peer")]
    assert moved == [first.frame_id, first.frame_id]  # the late copy too: at least once, never deleted unseen
    assert not redis_client.exists("frames:ready:gone")
    producer.close()


def test_a_processor_that_registers_again_while_it_is_reaped_stays_listed(
    scheduler: PipelineScheduler, redis_client
) -> None:
    """Both processors' entries lapsed in a Redis failover; the scheduler listed them dead, and one
    registered again before its (empty) queue was reaped: it must stay in the index, or routers
    never see it again and park its capability's frames for ever."""
    register_fake(redis_client, "back", ("face_detection",))
    assert scheduler.reap("back") == 0  # the reaping of an id listed dead a moment ago
    assert "back" in scheduler.registry.known_ids()
    assert [info.processor_id for info in scheduler.registry.live_with("face_detection")] == ["back"]


def test_stale_frames_of_a_dead_processor_are_counted_not_rerouted(scheduler, redis_url, redis_client) -> None:
    register_fake(redis_client, "gone", ("face_detection",))
    register_fake(redis_client, "peer", ("object_detection",))
    producer = FrameProducer(redis_url)
    publish(producer, ["face_detection"], timestamp=time.time() - 60)
    redis_client.delete("frameflow:processor:gone")
    assert scheduler.reap_dead() == {"gone": 0}
    assert redis_client.hget("frameflow:drops:{frames:ready:gone}", "stale") == b"1"
    producer.close()


def test_dead_letters_past_their_ttl_are_trimmed(scheduler: PipelineScheduler, redis_client) -> None:
    old = int(time.time() * 1000) - scheduler.broker.dead_letter_ttl_ms - 60_000
    redis_client.xadd("frameflow:dead:{default}", {"dead_reason": "old"}, id=f"{old}-0")
    redis_client.xadd("frameflow:dead:{default}", {"dead_reason": "recent"})
    assert scheduler.trim_dead_letters() == 1
    assert [fields[b"dead_reason"] for _, fields in redis_client.xrange("frameflow:dead:{default}")] == [b"recent"]


class PlainProcessor(ProcessorClient):
    """process_frame may be a plain function, as the seed allows."""

    def process_frame(self, frame_data: dict[bytes, bytes]) -> dict:  # type: ignore[override]
        return {"size": len(frame_data[b"image_data"])}


def test_a_plain_process_frame_works(redis_url: str, redis_client) -> None:
    processor = PlainProcessor("plain-1", ["plain"], "unused", redis_url=redis_url, result_stream="plain:out")
    processor.health_check_interval = 0.5
    producer = FrameProducer(redis_url)
    with running(processor, redis_client):
        decision = publish(producer, ["plain"])
        wait_for(lambda: redis_client.xlen("plain:out") == 1, what="the plain processor's result")
    [(_, result)] = redis_client.xrange("plain:out")
    assert result[b"frame_id"].decode() == decision.frame_id
    assert int(result[b"size"]) > 0
    producer.close()


def test_the_seed_default_redis_url_yields_to_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://configured:6379/0")
    assert _resolve_redis_url(SEED_DEFAULT_REDIS_URL) == "redis://configured:6379/0"
    assert _resolve_redis_url("redis://explicit:6380/1") == "redis://explicit:6380/1"
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.setenv("REDIS_HOST", "redis")
    monkeypatch.setenv("REDIS_PORT", "6390")
    assert _resolve_redis_url(SEED_DEFAULT_REDIS_URL) == "redis://redis:6390"


@pytest.mark.single_redis
def test_the_scheduler_health_says_when_redis_is_gone() -> None:
    with EmbeddedRedis() as server:
        broker = RedisStreamsBroker(server.url, middleware=[CapabilityRouter(refresh_s=0)])
        jobs = PipelineScheduler(broker, interval_s=60)
        port = jobs.serve_metrics(0)
        try:
            jobs.tick()
            status, health = get_json(f"http://127.0.0.1:{port}/health")
            assert (status, health["status"], health["redis_reachable"]) == (200, "healthy", True)
            assert health["version"] == __version__ and "emit_health" in health["jobs_last_run"]
            server.stop()
            status, health = get_json(f"http://127.0.0.1:{port}/health")
            assert (status, health["status"], health["redis_reachable"]) == (503, "unhealthy", False)
        finally:
            jobs.stop()
            broker.close()


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
