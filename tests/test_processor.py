"""ProcessorClient, FrameProducer and ResultReader against a real Redis.

The seed's FaceRecognitionProcessor runs as a real subprocess; the other
processors run in this process, each on its own event-loop thread
(:func:`tests.processor_harness.running`).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from pipeline import FrameProducer, FrameRejected, ProcessorRegistry, ResultReader
from pipeline.domain.results import wait_for_results
from pipeline.streams.keys import queue_keys

from .processes import pending_count
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

ROOT = Path(__file__).resolve().parent.parent
SEED_PROCESSOR = ROOT / "tests" / "seed_face_processor.py"


@pytest.fixture
def producer(redis_url: str, redis_client: redis.Redis):
    producer = FrameProducer(redis_url)
    yield producer
    producer.close()


# -- 1. the seed's processor, unchanged but for its import ---------------------------------------


@pytest.mark.slow
def test_seed_face_processor_runs_as_a_subprocess(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer, tmp_path: Path
) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    env.pop("FRAMEFLOW_NAMESPACE", None)
    log = (tmp_path / "seed.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(SEED_PROCESSOR)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    registry = ProcessorRegistry(redis_client)
    try:
        info = wait_for(
            lambda: registry.get("face-recognition-1") or process.poll() is not None,
            timeout=30,
            what="the seed processor to register",
        )
        assert process.poll() is None, f"the seed processor exited early: {(tmp_path / 'seed.log').read_text()}"
        assert info.pid == process.pid
        assert info.capabilities == ("face_detection", "face_recognition")
        assert info.capacity == 10
        assert info.result_stream == "faces:detected"

        # The stand-in model finds one face per 1000 bytes of image.
        sent = {
            publish(producer, ["face_detection"], camera_id="front-door", image=b"x" * 3500).frame_id: 3,
            publish(producer, ["face_recognition"], camera_id="garage", image=b"y" * 1200).frame_id: 1,
        }
        results = wait_for_results(redis_client, "faces:detected", 2, timeout_s=20)
        assert len(results) == 2, f"expected 2 results, got {results}"
        by_frame = {result["frame_id"]: result for result in results}
        assert set(by_frame) == set(sent)
        for frame_id, faces in sent.items():
            result = by_frame[frame_id]
            assert result["faces_detected"] == str(faces)
            assert len(json.loads(result["faces"])) == faces
            assert result["processor_id"] == "face-recognition-1"
        assert {by_frame[frame_id]["camera_id"] for frame_id in sent} == {"front-door", "garage"}

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, (tmp_path / "seed.log").read_text()
        assert registry.get("face-recognition-1") is None
        assert "face-recognition-1" not in registry.known_ids()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log.close()


# -- 5. stale frames -------------------------------------------------------------------------------


def test_stale_frames_are_skipped_and_counted(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    processor = RecordingProcessor("face-1", ["face_detection"], redis_url)
    with running(processor, redis_client):
        stale = publish(producer, ["face_detection"], timestamp=time.time() - 10, max_age_ms=1000)
        fresh = publish(producer, ["face_detection"])
        assert stale.targets == fresh.targets == ("face-1",)
        wait_for(lambda: drops(redis_client, "face-1").get("stale") == 1, what="the stale frame to be counted")
        wait_for(lambda: processor.frame_ids() == [fresh.frame_id], what="the fresh frame to be processed")
        wait_for(lambda: not queue_entries(redis_client, "face-1"), what="the queue to drain")
    assert stale.frame_id not in processor.frame_ids()
    assert processor.calls == 1
    assert drops(redis_client, "face-1") == {"stale": 1}


@pytest.mark.parametrize(
    ("queue_bound", "overflow", "held"), [(0, "drop_oldest", 4), (100, "reject_newest", 4), (100, "drop_oldest", 2)]
)
def test_a_processor_runs_capacity_frames_and_holds_the_next_one_for_each_slot(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer, queue_bound: int, overflow: str, held: int
) -> None:
    """Prefetch: each slot's next frame is read ahead (a finished thread starts it without waiting
    for Redis), except behind a ``drop_oldest`` bound, where a waiting frame must stay within the
    bound's reach (a fresher one replaces it); the rest stay in the queue."""

    class Bounded(RecordingProcessor):
        pass

    Bounded.queue_bound, Bounded.overflow = queue_bound, overflow
    processor = Bounded("face-9", ["face_detection"], redis_url, capacity=2)
    stream = queue_keys("frameflow", "frames.ready.face-9").stream
    processor.gate.clear()
    with running(processor, redis_client):
        for _ in range(8):
            publish(producer, ["face_detection"])
        wait_for(lambda: processor.calls == 2, what="two frames to start")
        wait_for(
            lambda: pending_count(redis_client, stream) == held,
            what=f"the processor to hold its two running frames and {held - 2} more",
        )
        assert processor.calls == 2
        assert processor._worker is not None and processor._worker.queue_prefetch == held  # and no more later
        assert redis_client.xlen(stream) == 8, "nothing acked: the others wait in Redis, undelivered"
        processor.gate.set()
        wait_for(lambda: processor.stats.processed == 8, what="every frame to be processed")
    assert pending_count(redis_client, stream) == 0


def test_processor_max_age_tightens_the_frames(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    class Impatient(RecordingProcessor):
        max_age_ms = 5000

    processor = Impatient("face-1", ["face_detection"], redis_url)
    with running(processor, redis_client):
        # Both frames say they are worth a minute; the processor wants them within 5 s.
        old = publish(producer, ["face_detection"], timestamp=time.time() - 10, max_age_ms=60_000)
        fresh = publish(producer, ["face_detection"], max_age_ms=60_000)
        wait_for(lambda: drops(redis_client, "face-1").get("stale") == 1, what="the old frame to be counted")
        wait_for(lambda: processor.frame_ids() == [fresh.frame_id], what="the fresh frame to be processed")
    assert old.frame_id not in processor.frame_ids()


# -- 7. one image for many processors --------------------------------------------------------------


def test_fan_out_stores_the_image_once_and_each_processor_gets_the_original_bytes(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    capabilities = {"faces-1": "face_detection", "objects-1": "object_detection", "gestures-1": "gesture_detection"}
    # Registered first without workers, so the queued entries can be inspected before anyone takes them.
    for processor_id, capability in capabilities.items():
        register_fake(redis_client, processor_id, (capability,))
    producer.router.claim_check_above = 0  # any fanned-out image is stored, however small
    decision = publish(producer, list(capabilities.values()))
    assert set(decision.targets) == set(capabilities)

    key = f"frameflow:image-raw:{{{decision.frame_id}}}"
    assert list(redis_client.scan_iter("frameflow:image-raw:*")) == [key.encode()]
    assert redis_client.get(key) == IMAGE  # stored raw
    for processor_id in capabilities:
        [entry] = queue_entries(redis_client, processor_id)
        assert entry[b"frame_id"] == decision.frame_id.encode()
        assert entry[b"image_ref"] == key.encode()
        assert b"image_data" not in entry and b"image" not in entry

    processors = [RecordingProcessor(pid, [capability], redis_url) for pid, capability in capabilities.items()]
    for processor in processors:  # the real processors take over the queues under the same ids
        with running(processor, redis_client):
            wait_for(lambda p=processor: p.frames, what=f"{processor.processor_id} to get the frame")
    for processor in processors:
        [frame] = processor.frames
        assert frame[b"frame_id"] == decision.frame_id.encode()
        assert frame[b"image_data"] == base64.b64encode(IMAGE)
        assert base64.b64decode(frame[b"image_data"]) == IMAGE
        assert b"image_ref" not in frame


def test_a_frame_for_one_processor_carries_its_image_inline(redis_client: redis.Redis, producer: FrameProducer) -> None:
    register_fake(redis_client, "faces-1", ("face_detection",))
    decision = publish(producer, ["face_detection"])
    [entry] = queue_entries(redis_client, "faces-1")
    assert entry[b"image"] == IMAGE  # raw, beside the envelope
    assert b"image_ref" not in entry and b"image_data" not in entry
    assert list(redis_client.scan_iter("frameflow:image*")) == []
    assert decision.targets == ("faces-1",)


# -- 8. validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image": b""}, "empty image"),
        ({"format": "gif"}, "unknown format 'gif'"),
        ({"camera_id": "front door!"}, "bad camera_id 'front door!'"),
        ({"camera_id": ""}, "bad camera_id ''"),
        ({"capabilities": []}, "capabilities: name at least one capability"),
        ({"capabilities": [""]}, "capabilities: name at least one capability"),
        ({"image": b"x" * 1025}, "image of 1025 bytes exceeds the limit of 1024 bytes"),
        ({"width": 0}, "bad width 0"),
        ({"timestamp": "yesterday"}, "bad timestamp 'yesterday'"),
    ],
)
def test_publish_rejects_invalid_frames_with_a_clear_error(
    redis_url: str, redis_client: redis.Redis, changes: dict, message: str
) -> None:
    register_fake(redis_client, "faces-1", ("face_detection",))
    producer = FrameProducer(redis_url, max_frame_bytes=1024)
    try:
        frame = {
            "camera_id": "cam-1",
            "image": b"x" * 100,
            "capabilities": ["face_detection"],
            "width": 640,
            "height": 480,
            **changes,
        }
        with pytest.raises(FrameRejected) as raised:
            producer.publish(**frame)
        assert message in str(raised.value)
        assert isinstance(raised.value, ValueError)
        assert queue_entries(redis_client, "faces-1") == []  # nothing was published
    finally:
        producer.close()


def test_image_at_the_limit_is_accepted(redis_url: str, redis_client: redis.Redis) -> None:
    register_fake(redis_client, "faces-1", ("face_detection",))
    producer = FrameProducer(redis_url, max_frame_bytes=1024)
    try:
        decision = publish(producer, ["face_detection"], image=b"x" * 1024)
    finally:
        producer.close()
    assert decision.targets == ("faces-1",)


# -- 9. health endpoint ----------------------------------------------------------------------------


def test_health_endpoint_reports_the_processor(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRAMEFLOW_HEALTH_HOST", raising=False)
    processor = RecordingProcessor(
        "face-1", ["face_detection", "face_recognition"], redis_url, health_port=0, capacity=4
    )
    with running(processor, redis_client):
        assert processor._health is not None
        port = processor._health.port
        assert port != 0
        assert processor._health._server is not None
        assert processor._health._server.server_address[0] == "127.0.0.1"
        info = ProcessorRegistry(redis_client).get("face-1")
        assert info is not None and info.health_endpoint == f"http://127.0.0.1:{port}/health"

        publish(producer, ["face_detection"])
        wait_for(lambda: processor.stats.processed == 1, what="one frame to be processed")

        def drained_report() -> dict | None:
            """The report once the frame's ack (written after ``processed`` counts it) left the queue."""
            with urllib.request.urlopen(info.health_endpoint, timeout=5) as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "application/json"
                report = json.loads(response.read())
            return report if report["queue_backlog"] == 0 else None

        body = wait_for(drained_report, what="the report with the frame acknowledged")
    assert body["processor_id"] == "face-1"
    assert body["capabilities"] == ["face_detection", "face_recognition"]
    assert body["capacity"] == 4
    assert body["in_flight"] == 0
    assert body["processed"] == 1
    assert body["failed"] == 0
    assert body["last_error"] == ""
    assert isinstance(body["uptime_s"], float) and body["uptime_s"] > 0
    assert body["queue_backlog"] == 0
    assert body["status"] == "healthy"


def test_health_endpoint_is_not_served_without_health_port(redis_url: str, redis_client: redis.Redis) -> None:
    processor = RecordingProcessor("face-1", ["face_detection"], redis_url)
    with running(processor, redis_client):
        assert processor._health is None
        info = ProcessorRegistry(redis_client).get("face-1")
        assert info is not None and info.health_endpoint is None


# -- 10. result reader -----------------------------------------------------------------------------


def test_result_reader_acknowledges_as_it_goes(redis_client: redis.Redis) -> None:
    stream = "faces:detected"
    ids = [redis_client.xadd(stream, {"frame_id": f"f{n}", "faces_detected": str(n)}) for n in range(1, 4)]

    reader = ResultReader(redis_client, stream, "ha-bridge", consumer="bridge-1", block_ms=50, follow=False)
    crashed = iter(reader)
    assert next(crashed)["frame_id"] == "f1"
    assert next(crashed)["frame_id"] == "f2"  # asking for f2 acknowledged f1; f2 is being handled
    # f1 is acknowledged; f2 (being handled) and f3 (read ahead in the same batch) are not.
    pending = redis_client.xpending_range(stream, "ha-bridge", min="-", max="+", count=10)
    assert [entry["message_id"] for entry in pending] == ids[1:]

    # The consumer "crashes" while handling f2: a new reader under the same name gets f2 again, then f3.
    restarted = ResultReader(redis_client, stream, "ha-bridge", consumer="bridge-1", block_ms=50, follow=False)
    assert [result["frame_id"] for result in restarted] == ["f2", "f3"]
    assert redis_client.xpending(stream, "ha-bridge")["pending"] == 0

    # Another group reads the whole stream for itself.
    other = ResultReader(redis_client, stream, "automation", consumer="engine-1", block_ms=50, follow=False)
    assert [result["frame_id"] for result in other] == ["f1", "f2", "f3"]
    crashed.close()  # its late acknowledgement of f2 changes nothing


def test_result_reader_skips_pending_entries_deleted_since(redis_client: redis.Redis) -> None:
    stream = "faces:detected"
    ids = [redis_client.xadd(stream, {"frame_id": f"f{n}"}) for n in range(1, 4)]
    crashed = iter(ResultReader(redis_client, stream, "ha-bridge", consumer="bridge-1", block_ms=50, follow=False))
    assert next(crashed)["frame_id"] == "f1"  # f1..f3 are now pending for bridge-1
    redis_client.xdel(stream, ids[1])  # f2 trimmed away before anyone handled it

    restarted = ResultReader(redis_client, stream, "ha-bridge", consumer="bridge-1", block_ms=50, follow=False)
    assert [result.get("frame_id") for result in restarted] == ["f1", "f3"]
    assert redis_client.xpending(stream, "ha-bridge")["pending"] == 0
    crashed.close()


def test_result_reader_sees_results_of_a_processor(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    processor = RecordingProcessor("face-1", ["face_detection"], redis_url, result_stream="faces:detected")
    with running(processor, redis_client):
        decision = publish(producer, ["face_detection"], camera_id="porch")
        wait_for(lambda: redis_client.xlen("faces:detected") == 1, what="the result to be published")
    reader = ResultReader(redis_client, "faces:detected", "ha-bridge", consumer="bridge-1", block_ms=50, follow=False)
    [result] = list(reader)
    assert result["frame_id"] == decision.frame_id
    assert result["camera_id"] == "porch"
    assert result["processor_id"] == "face-1"
    assert result["image_bytes"] == str(len(IMAGE))
    assert float(result["latency_ms"]) >= 0


@pytest.mark.parametrize(
    "now",
    [1796685405.0, 1796685405.840831, 1796685405.9999996, 1796685405.0000004, 951782400.5, 0.25],
)
def test_result_timestamps_read_as_datetime_isoformat(now: float) -> None:
    """A result's timestamp, formatted once per second, is the text ``datetime.isoformat`` gives
    (no fraction on a whole second, rounding up into the next second)."""
    from datetime import UTC, datetime

    from pipeline.domain.results import utc_now_iso

    assert utc_now_iso(now) == datetime.fromtimestamp(now, UTC).isoformat()
    assert utc_now_iso(now) == datetime.fromtimestamp(now, UTC).isoformat()  # the cached second too
