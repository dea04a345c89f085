"""``python -m benchmarks.dashboard``: what ``frameflow dashboard`` costs Redis, and how late it shows a result.

Against an embedded Redis of its own holding a small pipeline's state (registered processors, each
with a queue and a result stream of a few hundred results, dead letters on one queue), it starts
``frameflow dashboard`` as a process (the default 1 s interval) and opens pages in Debian's Chromium
(headless, Playwright):

* **cost**: Redis commands per second (``INFO stats`` ``total_commands_processed``, over a window,
  less this script's own INFO call) with 0, 1, 5 and 20 tabs open on the overview, the tabs all in
  one browser profile (one event stream, shared by a SharedWorker) and each in a profile of its own
  (one event stream each). One shared poller: the figure must not grow with the tabs either way.
* **latency**: a result is written to a result stream at a random moment; the clock stops when an
  open page shows it (the page's ``data-newest-result-ms`` reaches the entry's id). The interval
  bounds it: a result waits for the next read (0-1 s), then one event and one render.

Prints both tables.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from pipeline.domain.registry import ProcessorInfo, ProcessorRegistry
from pipeline.streams.embedded import EmbeddedRedis, free_port
from pipeline.streams.keys import queue_keys

PROCESSORS = ("bench-faces", "bench-objects", "bench-sample")


def seed_pipeline(client: redis.Redis) -> None:
    """Registered processors with queues, results and some dead letters: what the dashboard reads."""
    registry = ProcessorRegistry(client)
    for processor_id in PROCESSORS:
        queue_name = f"frames.ready.{processor_id}"
        info = ProcessorInfo(
            processor_id, ("bench",), 4, queue_name, f"process_frame.{processor_id}", f"{processor_id}:results"
        )
        registry.register(info, ttl_s=3600)
        keys = queue_keys("frameflow", queue_name)
        client.xgroup_create(keys.stream, "workers", id="0", mkstream=True)
        for index in range(300):
            client.xadd(info.result_stream or "", _result(processor_id, f"seed-{index}"))
    dead = queue_keys("frameflow", f"frames.ready.{PROCESSORS[0]}").dead
    for index in range(20):
        client.xadd(dead, {"frame_id": f"dead-{index}", "dead_reason": "bench", "dead_at_ms": "1"})


def _result(processor_id: str, frame_id: str) -> dict[str, str]:
    return {"frame_id": frame_id, "camera_id": "cam-1", "processor_id": processor_id, "latency_ms": "12.5"}


@contextmanager
def dashboard(redis_url: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": os.getcwd()}
    env.pop("FRAMEFLOW_DASHBOARD_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.tools.cli", "dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/config", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the dashboard did not start") from None
                time.sleep(0.1)  # waiting for a process to listen: nothing to wait on
        yield url
    finally:
        process.terminate()
        process.wait(10)


def commands_per_s(client: redis.Redis, window_s: float) -> float:
    before = int(client.info("stats")["total_commands_processed"])
    time.sleep(window_s)  # the measurement window
    after = int(client.info("stats")["total_commands_processed"])
    return (after - before - 1) / window_s  # the first INFO is counted in ``after``


def measure_cost(
    browser: Any, url: str, client: redis.Redis, tabs: list[int], window_s: float, *, shared: bool
) -> dict[int, float]:
    """Commands/s with each count of tabs open: all in one browser profile (``shared``: one event
    stream through the SharedWorker), or each in a profile of its own (one stream per tab)."""
    costs = {}
    for count in tabs:
        contexts = [browser.new_context() for _ in range(1 if shared else count)]
        pages = [contexts[index % len(contexts)].new_page() for index in range(count)]
        for page in pages:
            page.goto(url)
            page.wait_for_selector("#processors tbody tr", timeout=30_000)
        costs[count] = commands_per_s(client, window_s)
        for context in contexts:
            context.close()
    return costs


def measure_latency(browser: Any, url: str, client: redis.Redis, samples: int) -> list[float]:
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("#processors tbody tr", timeout=20_000)
    latencies = []
    for index in range(samples):
        time.sleep(random.uniform(0.2, 1.2))  # a random phase against the poller's interval
        started = time.monotonic()
        entry_id = client.xadd(f"{PROCESSORS[0]}:results", _result(PROCESSORS[0], f"timed-{index}"))
        millis = int(entry_id.split(b"-")[0])
        page.wait_for_function(
            "(millis) => Number(document.body.dataset.newestResultMs || 0) >= millis", arg=millis, polling=5
        )
        latencies.append((time.monotonic() - started) * 1000)
    page.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tabs", default="0,1,5,20", help="Tab counts to measure the cost with.")
    parser.add_argument("--window", type=float, default=10.0, help="Seconds each cost is measured over.")
    parser.add_argument("--samples", type=int, default=30, help="Results timed for the latency.")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with EmbeddedRedis() as server, sync_playwright() as playwright:
        client = redis.Redis.from_url(server.url)
        seed_pipeline(client)
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        with dashboard(server.url) as url:
            counts = [int(count) for count in args.tabs.split(",")]
            shared = measure_cost(browser, url, client, counts, args.window, shared=True)
            separate = measure_cost(browser, url, client, counts, args.window, shared=False)
            latencies = measure_latency(browser, url, client, args.samples)
        browser.close()
    print("| tabs open | commands/s, tabs of one browser | commands/s, each tab its own browser profile |")
    print("| ---: | ---: | ---: |")
    for count in counts:
        print(f"| {count} | {shared[count]:.1f} | {separate[count]:.1f} |")
    ordered = sorted(latencies)
    print(
        f"\nresult → page, {len(ordered)} results: median {statistics.median(ordered):.0f} ms, "
        f"p95 {ordered[int(len(ordered) * 0.95) - 1]:.0f} ms, min {ordered[0]:.0f} ms, max {ordered[-1]:.0f} ms"
    )


if __name__ == "__main__":
    main()
