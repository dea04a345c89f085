"""HTTP cameras against a real HTTP server on a loopback port: an MJPEG stream (parts with and
without ``Content-Length``) and a JPEG snapshot URL that fails with HTTP 500, then recovers."""

from __future__ import annotations

import io
import itertools

import pytest
from PIL import Image

from pipeline.cameras.backoff import Backoff
from pipeline.cameras.capture import CaptureThread
from pipeline.cameras.captured import Captured
from pipeline.cameras.errors import CameraStalled, CameraUnavailable
from pipeline.cameras.http import http_frames
from pipeline.cameras.latest import LatestSlot
from pipeline.cameras.status import CameraStatus
from tests.cameras import HttpCamera
from tests.polling import wait_until


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "boundary-only"])
def test_mjpeg_stream_parts_arrive_as_jpeg_frames(content_length: bool) -> None:
    with HttpCamera(fps=50, content_length=content_length) as camera:
        frames = list(itertools.islice(http_frames(camera.url("/mjpeg"), fps=5, stall_timeout_s=2), 5))
    assert [(frame.width, frame.height, frame.codec) for frame in frames] == [(320, 240, "mjpeg")] * 5
    for frame in frames:
        assert frame.jpeg is not None
        with Image.open(io.BytesIO(frame.jpeg)) as image:
            image.load()  # the whole picture, not a part cut at the wrong place
    assert len({frame.jpeg for frame in frames}) == 5  # five different pictures, in order


def test_an_mjpeg_stream_that_stops_sending_is_a_stall() -> None:
    with HttpCamera(fps=50) as camera:
        frames = http_frames(camera.url("/mjpeg"), fps=5, stall_timeout_s=0.5)
        next(frames)
        camera.paused.set()  # the server keeps the connection open and sends nothing more
        with pytest.raises(CameraStalled, match="stalled"):
            for _ in frames:
                pass


def test_a_snapshot_url_that_answers_500_is_retried_until_it_recovers() -> None:
    status = CameraStatus("porch", "http://127.0.0.1/snapshot")
    slot: LatestSlot[Captured] = LatestSlot(status.skip)
    with HttpCamera() as camera:
        url = camera.url("/snapshot")
        thread = CaptureThread(lambda: http_frames(url, fps=20, stall_timeout_s=2), slot, status, Backoff(0.05, 0.2))
        thread.start()
        try:
            wait_until(lambda: status.frames_in >= 2, 10, "the first snapshots")
            camera.failures = 3
            wait_until(lambda: "HTTP 500" in status.last_error, 10, "the camera's HTTP 500")
            wait_until(lambda: status.reconnects == 1 and status.connected, 10, "the camera to recover")
            before = status.frames_in
            wait_until(lambda: status.frames_in >= before + 2, 10, "snapshots after the recovery")
        finally:
            thread.stop()
            thread.join(5)
    assert camera.failures == 0 and camera.requests["/snapshot"] >= 7
    assert status.last_gap_s > 0
    assert slot.take() is not None


def test_an_http_error_names_the_url_without_its_password() -> None:
    with HttpCamera() as camera:
        camera.failures = 1
        url = camera.url("/snapshot").replace("http://", "http://admin:pa55word@")
        with pytest.raises(CameraUnavailable) as raised:
            next(http_frames(url, fps=1, stall_timeout_s=2))
    assert "HTTP 500" in str(raised.value) and "admin:***@" in str(raised.value)
    assert "pa55word" not in str(raised.value)


def test_a_redirect_is_followed_on_the_cameras_host_and_refused_to_another_one() -> None:
    with HttpCamera() as camera, HttpCamera() as elsewhere:
        same_host = camera.url("/redirect?to=/snapshot").replace("http://", "http://admin:pa55word@")
        assert next(http_frames(same_host, fps=1, stall_timeout_s=2)).jpeg is not None
        other_host = camera.url(f"/redirect?to={elsewhere.url('/snapshot')}").replace(
            "http://", "http://admin:pa55word@", 1
        )
        with pytest.raises(CameraUnavailable, match="HTTP 302"):
            next(http_frames(other_host, fps=1, stall_timeout_s=2))
    assert camera.requests["/snapshot"] == 1 and "/snapshot" not in elsewhere.requests  # no credentials went there


def test_credentials_in_a_snapshot_urls_query_are_masked_in_errors() -> None:
    with HttpCamera() as camera:
        camera.failures = 1
        url = camera.url("/snapshot") + "?user=admin&pwd=pa55word&channel=1"
        with pytest.raises(CameraUnavailable) as raised:
            next(http_frames(url, fps=1, stall_timeout_s=2))
    assert "?user=admin&pwd=***&channel=1: HTTP 500" in str(raised.value)
