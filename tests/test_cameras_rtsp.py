"""RTSP cameras against a real RTSP server (GStreamer, H.264 at 320x240): frames reach a processor,
a killed server is reconnected, a stalled one detected, a fast camera capped without queueing.

No decoder is mocked: frames come from :mod:`tests.rtsp_server` over TCP and are decoded by PyAV.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
from prometheus_client import generate_latest

from pipeline.cameras.backoff import Backoff
from pipeline.cameras.config import camera_from_dict
from pipeline.cameras.errors import CameraStalled, CameraUnavailable
from pipeline.cameras.metrics import camera_registry
from pipeline.cameras.rtsp import rtsp_frames
from pipeline.cameras.runner import CameraRunner
from pipeline.cameras.state import CameraStateStore
from pipeline.processes.producer import FrameProducer
from pipeline.streams.keys import queue_keys
from tests.cameras import rtsp_server
from tests.cli_harness import frameflow
from tests.polling import wait_until
from tests.processor_harness import RecordingProcessor, queue_entries, register_fake, running

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def publishing(runner: CameraRunner) -> Iterator[CameraRunner]:
    """``runner.run()`` on a thread for the block; fails the test if it raised."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=run, name="camera-runner", daemon=True)
    thread.start()
    try:
        yield runner
    finally:
        runner.stop()
        thread.join(10)
    assert not thread.is_alive(), "the camera runner did not stop"
    assert not failure, f"the camera runner raised {failure[0]!r}"


def runner_for(url: str, redis_url: str, **camera: object) -> CameraRunner:
    config = camera_from_dict({"id": "door", "url": url, "capabilities": ["look"], "stall_timeout": 2, **camera})
    producer = FrameProducer(redis_url)
    return CameraRunner([config], producer, backoff=lambda: Backoff(0.1, 0.5))


def rss() -> int:
    """This process's resident memory, in bytes."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def enqueued_after(entry_id: bytes) -> float:
    """The time Redis wrote a stream entry (its id's milliseconds), in seconds."""
    return int(entry_id.split(b"-")[0]) / 1000


def test_rtsp_frames_reach_a_processor_with_the_camera_id_and_increasing_capture_times(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    processor = RecordingProcessor("viewer-1", ["look"], redis_url)
    with (
        rtsp_server(tmp_path) as server,
        running(processor, redis_client),
        publishing(runner_for(server.url, redis_url, fps=10)),
    ):
        wait_until(lambda: redis_client.xlen("results:viewer-1") >= 6, 20, "six results")
    results = [fields for _, fields in redis_client.xrange("results:viewer-1")]
    assert {fields[b"camera_id"] for fields in results} == {b"door"}
    captured = [datetime.fromisoformat(fields[b"captured_at"].decode()) for fields in results]
    assert captured == sorted(captured) and len(set(captured)) == len(captured), captured
    frame = processor.frames[0]
    assert (frame[b"width"], frame[b"height"], frame[b"format"]) == (b"320", b"240", b"jpeg")


def test_a_killed_server_is_reconnected_the_gap_reported_and_no_stale_frame_published(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    register_fake(redis_client, "viewer-1", ("look",))
    caplog.set_level(logging.INFO, logger="pipeline.cameras")
    with rtsp_server(tmp_path) as server, publishing(runner_for(server.url, redis_url, fps=10, max_age=1)) as runner:
        status = runner.statuses[0]
        wait_until(lambda: len(queue_entries(redis_client, "viewer-1")) >= 3, 20, "frames before the cut")
        server.kill()
        wait_until(lambda: not status.connected, 10, "the camera to be seen down")
        before = len(queue_entries(redis_client, "viewer-1"))
        server.start()
        wait_until(lambda: status.reconnects == 1, 20, lambda: f"a reconnect (last error: {status.last_error})")
        wait_until(lambda: len(queue_entries(redis_client, "viewer-1")) >= before + 3, 20, "frames after it")
        assert all(feed.capture.is_alive() for feed in runner.feeds), "the capture thread died"
    assert status.last_gap_s > 0
    assert any("reconnected after" in record.getMessage() for record in caplog.records), caplog.text
    for entry_id, fields in redis_client.xrange(queue_keys("frameflow", "frames.ready.viewer-1").stream):
        age = enqueued_after(entry_id) - datetime.fromisoformat(fields[b"timestamp"].decode()).timestamp()
        # max_age is checked when the frame is taken; encoding and the write take a little more.
        assert age <= 1.0 + 0.25, f"a frame {age:.2f}s old was published (max_age 1s)"


def test_a_stalled_stream_is_detected_within_the_stall_timeout(tmp_path: Path) -> None:
    with rtsp_server(tmp_path) as server:
        frames = rtsp_frames(server.url, open_timeout_s=10, stall_timeout_s=1.5)
        for index, _ in enumerate(frames):
            if index == 5:
                break
        server.freeze()
        frozen = time.monotonic()
        with pytest.raises(CameraStalled, match=r"no frame for 1\.5s"):
            for _ in frames:
                pass
        detected_after = time.monotonic() - frozen
        server.thaw()
    assert detected_after <= 1.5 + 0.75, f"the stall was detected after {detected_after:.2f}s"


def test_a_30_fps_camera_capped_at_5_fps_publishes_5_fps_and_counts_every_skipped_frame(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    register_fake(redis_client, "viewer-1", ("look",))
    with rtsp_server(tmp_path, fps=30) as server, publishing(runner_for(server.url, redis_url, fps=5)) as runner:
        status = runner.statuses[0]
        wait_until(lambda: status.frames_out >= 2, 20, "the first frames")
        start, start_entries, start_memory = time.monotonic(), len(queue_entries(redis_client, "viewer-1")), rss()
        wait_until(lambda: time.monotonic() - start >= 3, 5, "three seconds")
        published_fps = (len(queue_entries(redis_client, "viewer-1")) - start_entries) / (time.monotonic() - start)
        growth = rss() - start_memory
        frames_in, frames_out, _, skipped = status.totals()
        metrics = generate_latest(camera_registry(runner.statuses)).decode()
    assert 4.0 <= published_fps <= 5.5, published_fps
    # Flat memory: the ~75 frames skipped in the window (115 KB each decoded) would be ~8 MB if queued.
    assert growth < 3_000_000, f"memory grew by {growth:,} bytes in 3 s"
    assert frames_in >= 5 * frames_out  # the camera's 30 fps, of which 5 published
    # Nothing queued in memory: every frame received is published, counted skipped, or the one in the slot.
    assert frames_in - frames_out - sum(skipped.values()) in (0, 1), (frames_in, frames_out, skipped)
    assert (
        f'frameflow_camera_frames_skipped_total{{camera="door",reason="fps_cap"}} {skipped["fps_cap"]:.1f}' in metrics
    )


def test_the_password_of_a_camera_never_shows_in_its_errors_or_state(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    with rtsp_server(tmp_path, credentials="viewer:s3cret-pw") as server:
        wrong = server.url.replace("s3cret-pw", "wr0ng-pw")
        runner = runner_for(wrong, redis_url, fps=5)
        runner.state = CameraStateStore(redis_client, "frameflow")
        with publishing(runner):
            status = runner.statuses[0]
            wait_until(lambda: status.last_error, 20, "the camera to refuse")
            wait_until(lambda: redis_client.exists("frameflow:camera:door"), 10, "the camera's state in Redis")
    stored = str(redis_client.hgetall("frameflow:camera:door"))
    assert "wr0ng-pw" not in status.last_error + stored and "viewer:***@" in status.last_error, status.last_error
    assert not status.connected


def test_enqueue_sends_the_newest_frames_of_an_rtsp_camera_and_masks_its_password(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    register_fake(redis_client, "viewer-1", ("look",))
    with rtsp_server(tmp_path, credentials="viewer:s3cret-pw") as server:
        result = frameflow(
            redis_url, "enqueue", "--source", server.url, "--capability", "look", "--count", "3", "--rate", "10"
        )
    assert result.exit_code == 0, result.output
    entries = queue_entries(redis_client, "viewer-1")
    assert [(entry[b"width"], entry[b"height"], entry[b"format"]) for entry in entries] == [
        (b"320", b"240", b"jpeg")
    ] * 3
    assert "s3cret-pw" not in result.output and "viewer:***@" in result.output


def test_the_transport_is_tcp_by_default_and_udp_when_asked(tmp_path: Path) -> None:
    with rtsp_server(tmp_path, tcp_only=True) as server:
        frames = rtsp_frames(server.url, open_timeout_s=10, stall_timeout_s=2)
        first = [frame for _, frame in zip(range(3), frames, strict=False)]
        frames.close()
        with pytest.raises(CameraUnavailable):  # this server refuses RTP over UDP
            next(rtsp_frames(server.url, transport="udp", open_timeout_s=5, stall_timeout_s=2))
    assert [(frame.codec, frame.width, frame.height) for frame in first] == [("h264", 320, 240)] * 3
