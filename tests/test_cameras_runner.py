"""The publisher's rules, frame by frame: the newest frame only, nothing older than ``max_age``,
strictly increasing capture times, the camera's size and quality; and a Redis that goes away."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.cameras import runner as runner_module
from pipeline.cameras.backoff import Backoff
from pipeline.cameras.captured import Captured
from pipeline.cameras.config import camera_from_dict
from pipeline.cameras.latest import LatestSlot
from pipeline.cameras.runner import CameraRunner, Feed
from pipeline.processes.producer import FrameProducer
from pipeline.streams.embedded import EmbeddedRedis
from tests.cameras import jpeg
from tests.polling import wait_until


def feed(**camera: object) -> Feed:
    return Feed(camera_from_dict({"id": "door", "url": "synthetic", "capabilities": ["x"], **camera}), Backoff)


def test_a_frame_older_than_max_age_is_skipped_and_counted_stale() -> None:
    camera = feed(max_age=1)
    camera.slot.put(Captured(320, 240, "mjpeg", jpeg=jpeg(), received=time.monotonic() - 1.5))
    assert camera.frame_to_publish(time.monotonic()) is None
    assert camera.status.skipped == {"stale": 1}


def test_only_the_newest_frame_is_published_and_the_replaced_ones_are_counted() -> None:
    camera = feed()
    for shade in range(3):
        camera.slot.put(Captured(320, 240, "mjpeg", jpeg=jpeg(shade=shade * 60)))
    newest = jpeg(shade=120)
    frame = camera.frame_to_publish(time.monotonic())
    assert frame is not None and frame["image"] == newest  # sent as it came: no re-encoding
    assert camera.status.skipped == {"fps_cap": 2}


def test_frames_wait_for_the_cameras_turn_under_its_fps_cap() -> None:
    camera = feed(fps=2)
    now = time.monotonic()
    camera.slot.put(Captured(320, 240, "mjpeg", jpeg=jpeg()))
    assert camera.frame_to_publish(now) is not None
    camera.slot.put(Captured(320, 240, "mjpeg", jpeg=jpeg()))
    assert camera.frame_to_publish(now + 0.4) is None  # its next turn is 0.5 s later
    assert camera.frame_to_publish(now + 0.5) is not None


def test_capture_times_strictly_increase_even_when_the_clock_does_not() -> None:
    camera = feed(fps=1000)
    same_time = datetime(2026, 1, 1, tzinfo=UTC)
    stamps = []
    for step in range(3):
        camera.slot.put(Captured(320, 240, "mjpeg", jpeg=jpeg(), captured_at=same_time))
        frame = camera.frame_to_publish(time.monotonic() + step)
        assert frame is not None
        stamps.append(frame["timestamp"])
    assert stamps[0] == same_time and stamps[0] < stamps[1] < stamps[2]


def test_a_camera_with_a_width_is_resized_keeping_its_proportions() -> None:
    camera = feed(width=160, quality=50)
    camera.slot.put(Captured(320, 240, "mjpeg", jpeg=jpeg()))
    frame = camera.frame_to_publish(time.monotonic())
    assert frame is not None and (frame["width"], frame["height"]) == (160, 120)
    assert frame["max_age_ms"] == 5000 and frame["capabilities"] == ["x"]


def test_the_slot_keeps_one_item_and_counts_each_replaced_one() -> None:
    skipped: list[str] = []
    slot: LatestSlot[int] = LatestSlot(skipped.append)
    for item in range(5):
        slot.put(item)
    assert slot.take() == 4 and slot.take() is None
    assert skipped == ["fps_cap"] * 4


def test_redis_going_away_is_one_line_and_counted_frames_and_publishing_resumes_when_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.cameras")
    server = EmbeddedRedis(data_dir=str(tmp_path)).start()
    config = camera_from_dict({"id": "door", "url": "synthetic", "capabilities": ["x"], "fps": 20})
    # No retries in the client: each round fails at once while Redis is away (redis-py's default retries
    # take about 5 s a round, which the runner survives the same way, only slower).
    producer = FrameProducer(redis_client=redis.Redis.from_url(server.url, retry=Retry(NoBackoff(), 0)))
    runner = CameraRunner([config], producer)
    status = runner.statuses[0]
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: status.frames_out >= 2, 20, "the first frames")
        server.stop()
        wait_until(lambda: status.skipped["redis"] >= 3, 30, "frames skipped while Redis is away")
        server.start()
        published = status.frames_out
        wait_until(lambda: status.frames_out >= published + 2, 30, "publishing after Redis is back")
    finally:
        runner.stop()
        thread.join(10)
        producer.close()
        server.stop()
    assert not thread.is_alive()
    lines = [record.getMessage() for record in caplog.records if "Redis" in record.getMessage()]
    assert len([line for line in lines if "skipped and counted until it answers" in line]) == 1, lines
    assert any("Redis answers again" in line for line in lines), lines


def test_the_runner_settles_its_heap_once_before_its_first_frame(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start-up's objects are frozen out of the collector's scans before frames flow (pipeline/processes/heap.py)."""
    config = camera_from_dict({"id": "door", "url": "synthetic", "capabilities": ["x"], "fps": 20})
    producer = FrameProducer(redis_url)
    runner = CameraRunner([config], producer)
    status = runner.statuses[0]
    published_when_settled: list[int] = []
    monkeypatch.setattr(runner_module, "settle_heap", lambda: published_when_settled.append(status.frames_out))
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: status.frames_out >= 2, 20, "the first frames")
    finally:
        runner.stop()
        thread.join(10)
        producer.close()
    assert published_when_settled == [0]
