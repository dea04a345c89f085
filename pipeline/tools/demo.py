"""``frameflow demo``: the pipeline end to end for a bounded run.

It starts the embedded Redis (unless ``REDIS_URL`` is set), the sample
processor as real Dramatiq worker processes (``dramatiq pipeline.broker
workers.sample``), publishes frames through :class:`FrameProducer` and reads the
results back from ``samples:processed``, then stops everything and summarises.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from pipeline.domain.keys import processor_queue
from pipeline.domain.registry import ProcessorRegistry
from pipeline.domain.results import wait_for_results
from pipeline.processes.producer import FrameProducer
from pipeline.settings import Settings
from pipeline.streams.embedded import EmbeddedRedis

#: The processor the demo runs (named, not imported: pipeline never imports workers),
#: what it offers, and where it publishes.
WORKER_MODULE = "workers.sample"
PROCESSOR_ID = "sample-1"
CAPABILITY = "sample"
RESULT_STREAM = "samples:processed"


@dataclass(frozen=True)
class DemoSummary:
    frames_sent: int
    routed: int
    results: int
    seconds: float
    latency_ms_p50: float
    latency_ms_p95: float
    dead_letters: int


@contextlib.contextmanager
def redis_for_demo(extra_args: list[str] | None = None) -> Iterator[str]:
    """The configured Redis, or an embedded one (started with ``extra_args``) for the run's lifetime."""
    url = Settings.from_env().redis_url
    if url:
        yield url
        return
    with EmbeddedRedis(extra_args=extra_args) as server:
        yield server.url


@contextlib.contextmanager
def worker_process(url: str, module: str = WORKER_MODULE) -> Iterator[subprocess.Popen[bytes]]:
    """``dramatiq pipeline.broker MODULE`` as a child, stopped with SIGTERM on exit."""
    command = [sys.executable, "-m", "dramatiq", "pipeline.broker", module, "--processes", "1", "--threads", "4"]
    with child_process(command, {"REDIS_URL": url, "HEALTH_CHECK_INTERVAL": "1"}) as process:
        yield process


@contextlib.contextmanager
def child_process(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` as a child with ``env`` added to ours, stopped with SIGTERM (then SIGKILL) on exit."""
    process = subprocess.Popen(command, env={**os.environ, **env})
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fake_image(number: int, size: int) -> bytes:
    """Deterministic bytes standing in for an encoded camera image."""
    seed = number.to_bytes(4, "big")
    return (seed * (size // 4 + 1))[:size]


def run_demo(frames: int = 100, image_bytes: int = 1024, timeout: float = 60.0) -> DemoSummary:
    with redis_for_demo() as url, worker_process(url):
        producer = FrameProducer(url, max_age_ms=int(timeout * 1000))
        client = producer.broker.client
        client.delete(RESULT_STREAM)
        await_registration(ProcessorRegistry(client, producer.broker.namespace), [PROCESSOR_ID], timeout)
        started = time.time()
        routed = 0
        for number in range(frames):
            decision = producer.publish(
                camera_id="demo-camera",
                image=fake_image(number, image_bytes),
                capabilities=[CAPABILITY],
                width=64,
                height=48,
                format="raw",
            )
            routed += bool(decision.targets)
        results = wait_for_results(client, RESULT_STREAM, frames, timeout)
        elapsed = time.time() - started
        dead = len(producer.broker.dead_letter_queue(processor_queue(PROCESSOR_ID)))
        producer.close()
    latencies = sorted(since_capture_ms(result) for result in results) or [0.0]
    return DemoSummary(
        frames_sent=frames,
        routed=routed,
        results=len(results),
        seconds=elapsed,
        latency_ms_p50=statistics.median(latencies),
        latency_ms_p95=latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))],
        dead_letters=dead,
    )


def await_registration(registry: ProcessorRegistry, processor_ids: list[str], timeout_s: float) -> bool:
    """Wait until every processor registered, so latency measures the pipeline, not its boot;
    False when one had not within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(registry.get(processor_id) is not None for processor_id in processor_ids):
            return True
        time.sleep(0.05)
    return False


def since_capture_ms(result: dict[str, str], at_ms: float | None = None) -> float:
    """Milliseconds from the frame's capture to ``at_ms`` (epoch ms), by default to the result's ``timestamp``."""
    try:
        captured = datetime.fromisoformat(result["captured_at"]).timestamp() * 1000
        if at_ms is None:
            at_ms = datetime.fromisoformat(result["timestamp"]).timestamp() * 1000
    except (KeyError, ValueError):
        return 0.0
    return at_ms - captured
