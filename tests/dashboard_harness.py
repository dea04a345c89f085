"""The dashboard's test rig: Debian's Chromium driven by Playwright, ``frameflow dashboard`` as a
process, and a small real pipeline (an echo processor process, frames published by the test).

The browser is the system's (``scripts/ensure-chromium``), never one Playwright downloads; a missing
browser or Playwright fails the tests with what to install, it does not skip them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline import FrameProducer
from pipeline.streams.embedded import free_port
from pipeline.streams.keys import queue_keys
from tests.polling import wait_until
from tests.processes import WorkerProcess, worker_env
from tests.processor_harness import publish

#: The capability of the test's processor.
CAPABILITY = "dash_echo"

#: Where Debian puts Chromium.
SYSTEM_CHROMIUM = "/usr/bin/chromium"


def chromium_path() -> str:
    found = shutil.which("chromium") or (SYSTEM_CHROMIUM if os.access(SYSTEM_CHROMIUM, os.X_OK) else None)
    if found is None:
        pytest.fail("the dashboard's browser tests need Debian's chromium: run scripts/ensure-chromium")
    return found


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """One headless Chromium (the system's) for a test module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the dashboard's browser tests need Playwright for Python: pip install -e '.[dev]'")
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


class DashboardProcess:
    """``frameflow dashboard`` on a free loopback port, as a real process."""

    def __init__(self, redis_url: str, log_path: Path, *, token: str = "", interval_s: float = 0.2) -> None:
        self.redis_url = redis_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = worker_env(
            redis_url,
            lease_ms=2000,
            max_deliveries=3,
            FRAMEFLOW_DASHBOARD_TOKEN=token,
            FRAMEFLOW_DASHBOARD_INTERVAL_S=str(interval_s),
        )
        command = [sys.executable, "-m", "pipeline.tools.cli", "dashboard", "--port", str(self.port)]
        self.process = WorkerProcess(command, env, log_path)
        wait_until(self._answers, 30, lambda: f"the dashboard to answer; it said:\n{self.process.log_tail()}")

    def _answers(self) -> bool:
        if not self.process.alive():
            raise AssertionError(f"the dashboard exited:\n{self.process.log_tail()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/api/config", timeout=2):
            return True
        return False

    def post(self, path: str, token: str | None = None, body: dict[str, Any] | None = None) -> tuple[int, dict]:
        """POST ``path`` as a script would (no browser): the status and the JSON answer."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["X-Frameflow-Token"] = token
        request = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(body or {}).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            return response.read().decode()

    def first_event(self) -> str:
        """The event stream up to its first ``overview`` event."""
        with urllib.request.urlopen(f"{self.url}/api/events", timeout=10) as response:
            text = ""
            while "event: overview" not in text or not text.endswith("\n\n"):
                text += response.readline().decode()
            return text

    def stop(self) -> None:
        self.process.stop()


def echo_processor(
    redis_url: str, processor_id: str, log_path: Path, capability: str = CAPABILITY, **extra: str
) -> WorkerProcess:
    env = worker_env(redis_url, lease_ms=2000, max_deliveries=3, ECHO_QUEUE_BOUND="0", ECHO_HEARTBEAT_S="0.3", **extra)
    return WorkerProcess([sys.executable, "-m", "tests.echo_processor", processor_id, capability], env, log_path)


def grey_jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    output = io.BytesIO()
    Image.new("RGB", (width, height), (128, 128, 128)).save(output, format="JPEG")
    return output.getvalue()


def dead_letter_by_hand(client: redis.Redis, processor_id: str, reason: str) -> str:
    """Move the oldest entry of ``processor_id``'s queue to its dead letters, as the broker does
    (its fields plus ``dead_*``); returns the frame id."""
    keys = queue_keys("frameflow", f"frames.ready.{processor_id}")
    ((entry_id, fields),) = client.xrange(keys.stream, count=1)
    dead = {**fields, b"dead_reason": reason, b"dead_queue": f"frames.ready.{processor_id}"}
    dead[b"dead_at_ms"] = str(int(time.time() * 1000))
    client.xadd(keys.dead, dead)
    client.xdel(keys.stream, entry_id)
    return fields[b"frame_id"].decode()


@contextlib.contextmanager
def publishing(
    redis_url: str, camera_id: str = "cam-dash", period_s: float = 0.02, **options: Any
) -> Iterator[list[str]]:
    """Frames of ``camera_id`` for the echo processor, one every ``period_s`` (the camera's rate), in a
    thread, until the block ends; yields the ids published so far. ``options`` go to ``publish`` (``image``)."""
    producer = FrameProducer(redis_url)
    stop = threading.Event()
    sent: list[str] = []

    def run() -> None:
        while not stop.wait(period_s):
            sent.append(publish(producer, [CAPABILITY], camera_id=camera_id, **options).frame_id)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join(timeout=10)
        producer.close()
