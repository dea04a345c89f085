"""``frameflow dashboard`` in a real browser (Debian's Chromium, headless, driven by Playwright) against
a real pipeline: the session's embedded Redis, an echo processor process, frames published by the
test, and the dashboard as a process of its own. Each test saves a screenshot of its page under the
session's tmp dir (``dashboard-screenshots``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import redis

from pipeline import FrameProducer, ProcessorRegistry
from pipeline.cameras.state import CameraStateStore
from pipeline.streams.embedded import EmbeddedRedis
from pipeline.streams.keys import queue_keys
from tests.dashboard_harness import (
    CAPABILITY,
    DashboardProcess,
    dead_letter_by_hand,
    echo_processor,
    grey_jpeg,
    headless_chromium,
    publishing,
)
from tests.polling import wait_until
from tests.processes import ROOT, WorkerProcess
from tests.processor_harness import publish, register_fake

PROCESSOR = "dash-echo"
TOKEN = "test-token-5f2c"
RESULTS = "echo:results"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pipeline_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="module")
def poisoned_frame(redis_url: str, pipeline_client: redis.Redis) -> str:
    """A frame of the echo processor's queue dead-lettered before the processor ever ran."""
    register_fake(pipeline_client, PROCESSOR, (CAPABILITY,))
    producer = FrameProducer(redis_url)
    try:
        publish(producer, [CAPABILITY], camera_id="cam-dead", max_age_ms=600_000)
    finally:
        producer.close()
    return dead_letter_by_hand(pipeline_client, PROCESSOR, "test: failed on purpose")


@pytest.fixture(scope="module")
def processor(redis_url: str, poisoned_frame: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    process = echo_processor(redis_url, PROCESSOR, tmp_path_factory.mktemp("dashboard") / "echo.log")
    registry = ProcessorRegistry(redis.Redis.from_url(redis_url))
    wait_until(lambda: (info := registry.get(PROCESSOR)) and info.pid == process.pid, 30, process.log_tail)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dashboard(
    redis_url: str, processor: WorkerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DashboardProcess]:
    server = DashboardProcess(redis_url, tmp_path_factory.mktemp("dashboard") / "dashboard.log", token=TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dashboard-screenshots")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1500, "height": 900})
    opened = context.new_page()
    opened.on("dialog", lambda dialog: dialog.accept())  # the confirmations: the operator says yes
    yield opened
    context.close()


def open_with_token(page: Any, dashboard: DashboardProcess, hash_: str = "") -> None:
    page.goto(f"{dashboard.url}/{hash_}")
    page.fill("#token", TOKEN)
    page.dispatch_event("#token", "change")


def test_overview_shows_the_processor_and_its_frames_per_s_rising_without_a_reload(
    dashboard: DashboardProcess, page: Any, screenshots: Path
) -> None:
    page.goto(dashboard.url)
    row = page.locator(f'#processors tr[data-processor="{PROCESSOR}"]')
    row.wait_for(timeout=15_000)
    assert float(row.locator("td.fps").inner_text()) == 0.0
    page.evaluate("window.notReloaded = true")
    with publishing(dashboard.redis_url):
        page.wait_for_function(
            f"""() => {{
              const cell = document.querySelector('#processors tr[data-processor="{PROCESSOR}"] td.fps');
              return cell && parseFloat(cell.textContent) > 0;
            }}""",
            timeout=20_000,
        )
        page.wait_for_selector("#chart-fps polyline", timeout=10_000)
        page.screenshot(path=str(screenshots / "overview.png"), full_page=True)
    assert page.evaluate("window.notReloaded") is True  # the numbers came without a page load
    assert page.locator("#connection").inner_text() == "live"


def test_eight_tabs_of_one_browser_all_go_live_on_one_shared_connection(
    dashboard: DashboardProcess, browser: Any
) -> None:
    context = browser.new_context()  # one browser profile: at most 6 connections to the dashboard
    try:
        tabs = [context.new_page() for _ in range(8)]
        for tab in tabs:
            tab.goto(dashboard.url)
        for tab in tabs:
            tab.locator(f'#processors tr[data-processor="{PROCESSOR}"]').wait_for(timeout=15_000)
            assert tab.locator("#connection").inner_text() == "live"
    finally:
        context.close()


def test_frame_lookup_by_id_shows_the_processor_that_handled_it(
    dashboard: DashboardProcess, pipeline_client: redis.Redis, page: Any, screenshots: Path
) -> None:
    producer = FrameProducer(dashboard.redis_url)
    try:
        frame_id = publish(producer, [CAPABILITY], camera_id="cam-lookup").frame_id
    finally:
        producer.close()
    wait_until(lambda: result_of(pipeline_client, frame_id), 20, f"the result of {frame_id}")
    page.goto(f"{dashboard.url}/#frame")
    page.fill("#frame-id", frame_id)
    page.click("#frame-search button")
    found = page.locator(f'#frame-result .result[data-processor="{PROCESSOR}"]')
    found.wait_for(timeout=10_000)
    assert f"processed by {PROCESSOR}" in found.inner_text() and "cam-lookup" in found.inner_text()
    page.screenshot(path=str(screenshots / "frame.png"), full_page=True)


def test_a_dead_letter_requeued_from_the_page_is_processed(
    dashboard: DashboardProcess, pipeline_client: redis.Redis, poisoned_frame: str, page: Any, screenshots: Path
) -> None:
    open_with_token(page, dashboard, "#dead-letters")
    letter = page.locator(f"#dead-letters tr[data-entry]:has-text('{poisoned_frame}')")
    letter.wait_for(timeout=10_000)
    assert "test: failed on purpose" in letter.inner_text()
    letter.locator("summary").click()  # show: the letter's fields
    assert "cam-dead" in letter.locator(".letter-fields").inner_text()
    page.screenshot(path=str(screenshots / "dead-letters.png"), full_page=True)
    letter.locator("button[data-action=requeue]").click()
    page.wait_for_selector("#message.ok", timeout=10_000)
    assert "requeued 1 dead letter(s)" in page.locator("#message").inner_text()
    wait_until(lambda: result_of(pipeline_client, poisoned_frame), 20, f"the requeued frame {poisoned_frame} processed")
    assert pipeline_client.xlen(queue_keys("frameflow", f"frames.ready.{PROCESSOR}").dead) == 0


def test_purge_from_the_page_deletes_every_dead_letter_of_the_queue(
    dashboard: DashboardProcess, pipeline_client: redis.Redis, page: Any
) -> None:
    dead = queue_keys("frameflow", f"frames.ready.{PROCESSOR}").dead
    for number in range(2):
        pipeline_client.xadd(dead, {"junk": str(number), "dead_reason": "malformed entry", "dead_at_ms": "1"})
    open_with_token(page, dashboard, "#dead-letters")
    page.locator(f'.dead-queue[data-queue="frames.ready.{PROCESSOR}"] button[data-action=purge]').click()
    page.wait_for_selector("#message.ok", timeout=10_000)
    assert "purged 2 dead letter(s)" in page.locator("#message").inner_text()
    assert pipeline_client.xlen(dead) == 0


def test_drain_from_the_page_stops_routing_to_the_processor_and_resume_restores_it(
    dashboard: DashboardProcess, pipeline_client: redis.Redis, page: Any, screenshots: Path
) -> None:
    registry = ProcessorRegistry(pipeline_client)
    open_with_token(page, dashboard)
    row = page.locator(f'#processors tr[data-processor="{PROCESSOR}"]')
    row.locator("button[data-action=drain]").click()
    wait_until(lambda: registry.get(PROCESSOR).draining, 10, f"{PROCESSOR} draining in the registry")
    assert routed_to(dashboard) == ()  # a new frame is not routed to it
    row.locator("button[data-action=resume]").wait_for(timeout=10_000)
    assert "draining" in row.locator("td.state").inner_text()
    page.screenshot(path=str(screenshots / "draining.png"), full_page=True)
    row.locator("button[data-action=resume]").click()
    wait_until(lambda: not registry.get(PROCESSOR).draining, 10, f"{PROCESSOR} routed to again")
    assert routed_to(dashboard) == (PROCESSOR,)


def test_without_a_token_the_page_is_read_only_and_actions_answer_403(
    redis_url: str,
    dashboard: DashboardProcess,
    pipeline_client: redis.Redis,
    page: Any,
    tmp_path: Path,
    screenshots: Path,
) -> None:
    read_only = DashboardProcess(redis_url, tmp_path / "read-only.log")
    try:
        page.goto(read_only.url)
        page.locator(f'#processors tr[data-processor="{PROCESSOR}"]').wait_for(timeout=15_000)
        assert "read-only" in page.locator("#mode").inner_text()
        assert page.locator("button.action").count() == 0
        assert page.locator("#token-box").is_hidden()
        page.screenshot(path=str(screenshots / "read-only.png"), full_page=True)
        status, answer = read_only.post(f"/api/processors/{PROCESSOR}/drain", token=TOKEN)
        assert status == 403 and "read-only" in answer["error"]
        status, _ = read_only.post(f"/api/dead-letters/frames.ready.{PROCESSOR}/purge", token=TOKEN)
        assert status == 403
        # SIGTERM with a page still streaming: it exits cleanly, without waiting for the page to go.
        started = time.monotonic()
        assert read_only.process.stop(timeout=10) == 0, read_only.process.log_tail()
        assert time.monotonic() - started < 5
    finally:
        read_only.stop()
    # With a token configured, a request without it, or with another one, is refused too.
    assert dashboard.post(f"/api/processors/{PROCESSOR}/drain")[0] == 403
    assert dashboard.post(f"/api/processors/{PROCESSOR}/drain", token="guess")[0] == 403
    assert not ProcessorRegistry(pipeline_client).get(PROCESSOR).draining


def test_cameras_page_shows_each_camera_with_its_newest_detection_boxed(
    redis_url: str,
    dashboard: DashboardProcess,
    pipeline_client: redis.Redis,
    page: Any,
    tmp_path: Path,
    screenshots: Path,
) -> None:
    CameraStateStore(pipeline_client, "frameflow").write(
        [{"camera_id": "porch", "connected": True, "fps_in": 10.0, "fps_out": 5.0, "last_frame_age_s": 0.1}], ttl_s=30
    )
    detector = echo_processor(
        redis_url, "dash-boxes", tmp_path / "boxes.log", "dash_boxes",
        ECHO_RESULTS="objects:detected", ECHO_BOX="20,30,140,150", FRAMEFLOW_SNAPSHOT_TTL_S="60",
    )  # fmt: skip
    try:
        registry = ProcessorRegistry(pipeline_client)
        wait_until(lambda: registry.get("dash-boxes"), 30, detector.log_tail)
        producer = FrameProducer(redis_url)
        try:
            producer.publish(
                camera_id="yard", image=grey_jpeg(320, 240), capabilities=["dash_boxes"], width=320, height=240
            )
        finally:
            producer.close()
        page.goto(f"{dashboard.url}/#cameras")
        assert "connected" in page.locator('#cameras .camera[data-camera="porch"]').inner_text(timeout=10_000)
        yard = page.locator('#cameras .camera[data-camera="yard"]')
        assert "person 0.90" in yard.locator(".detections").inner_text(timeout=20_000)
        picture = yard.locator("img.picture")
        picture.wait_for(timeout=10_000)
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
        red, green, blue, _ = picture.evaluate(PIXEL_AT, [21, 90])  # on the box's left edge
        assert red > 200 and green < 120 and blue < 80, (red, green, blue)
        red, green, blue, _ = picture.evaluate(PIXEL_AT, [80, 90])  # inside: the grey frame itself
        assert abs(red - 128) < 20 and abs(blue - 128) < 20, (red, green, blue)
        page.screenshot(path=str(screenshots / "cameras.png"), full_page=True)
    finally:
        detector.stop()


def test_cameras_page_shows_a_live_thumbnail_of_a_camera_without_detections(
    redis_url: str, dashboard: DashboardProcess, page: Any
) -> None:
    loaded = "(img) => img.complete && img.naturalWidth > 0"
    with publishing(redis_url, camera_id="driveway", period_s=0.05, image=grey_jpeg(640, 480)) as sent:
        page.goto(f"{dashboard.url}/#cameras")
        driveway = page.locator('#cameras .camera[data-camera="driveway"]')
        preview = driveway.locator("img.preview")
        preview.wait_for(timeout=20_000)
        page.wait_for_function(loaded, arg=preview.element_handle(), timeout=10_000)
        assert preview.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [640, 480]
        assert driveway.locator("img.picture").count() == 0  # the echo processor detects nothing
        first = preview.get_attribute("src")
        assert unquote(first.split("?v=")[1]) in sent
        wait_until(lambda: preview.get_attribute("src") != first, 20, "the preview never moved to a newer frame")
        page.wait_for_function(loaded, arg=driveway.locator("img.preview").element_handle(), timeout=10_000)


#: The colour of one pixel of an <img>, read through a canvas.
PIXEL_AT = """(img, [x, y]) => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  return Array.from(context.getImageData(x, y, 1, 1).data);
}"""


# -- helpers ---------------------------------------------------------------------------------
def result_of(client: redis.Redis, frame_id: str) -> bool:
    return any(fields.get(b"frame_id") == frame_id.encode() for _, fields in client.xrevrange(RESULTS, count=500))


def routed_to(dashboard: DashboardProcess) -> tuple[str, ...]:
    """Where a frame published now goes (a new producer, so it reads the registry afresh)."""
    producer = FrameProducer(dashboard.redis_url)
    try:
        return tuple(publish(producer, [CAPABILITY], camera_id="cam-route").targets)
    finally:
        producer.close()


def test_no_secret_reaches_the_page(page: Any, tmp_path: Path) -> None:
    secret = "redis-pass-7d1e"
    with EmbeddedRedis(extra_args=["--requirepass", secret]) as server:
        url = f"redis://:{secret}@127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(url)
        register_fake(client, "private-1", (CAPABILITY,))
        client.close()
        private = DashboardProcess(url, tmp_path / "private.log", token=TOKEN)
        try:
            page.goto(private.url)
            page.locator('#processors tr[data-processor="private-1"]').wait_for(timeout=15_000)
            assert "redis://:***@127.0.0.1" in page.locator("#mode").inner_text()
            seen = [
                page.content(),
                *(private.get(path) for path in ("/api/config", "/api/dead-letters", "/api/frames/x")),
            ]
            seen.append(private.first_event())
        finally:
            private.stop()
    for text in seen:
        assert secret not in text and TOKEN not in text


def test_without_the_extra_the_command_says_what_to_install_in_one_line() -> None:
    blocker = "import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None\n"
    code = blocker + "from pipeline.tools.cli.main import main; main(['dashboard'])"
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1
    assert completed.stderr.strip() == (
        "Error: frameflow dashboard needs starlette and uvicorn: pip install 'frameflow[dashboard]'"
    )


def test_a_frame_looked_up_links_to_its_trace_when_a_tracing_ui_is_configured(pipeline_client: redis.Redis) -> None:
    from pipeline.dashboard.lookup import find_frame

    register_fake(pipeline_client, "traced-1", (CAPABILITY,), result_stream="traced:results")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    context = json.dumps({"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    pipeline_client.xadd(
        "traced:results",
        {
            "frame_id": "f-1",
            "processor_id": "traced-1",
            "camera_id": "c",
            "latency_ms": "3.5",
            "trace_context": context,
        },
    )
    (result,) = find_frame(pipeline_client, "frameflow", "f-1", "http://jaeger:16686/trace/{trace_id}")["results"]
    assert result["processor_id"] == "traced-1" and result["latency_ms"] == "3.5"
    assert result["trace_url"] == f"http://jaeger:16686/trace/{trace_id}"
    (untraced,) = find_frame(pipeline_client, "frameflow", "f-1")["results"]
    assert untraced["trace_url"] is None and untraced["trace_id"] == trace_id
