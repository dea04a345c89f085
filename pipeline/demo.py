"""``frameflow demo``: a worker process and a producer moving frames through
the broker, on the embedded Redis unless ``REDIS_URL`` says otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import dramatiq

from .embedded import EmbeddedRedis
from .redis_streams import RedisStreamsBroker
from .settings import Settings

#: The queue the demo's frames go to (stream ``frames:demo``) and the actor that takes them,
#: defined in ``workers.demo`` (named, not imported: pipeline never imports workers).
QUEUE = "frames.demo"
ACTOR = "analyse_frame"
WORKER_MODULE = "workers.demo"

#: Where the demo processor publishes its results.
RESULT_STREAM = "demo:results"


@dataclass(frozen=True)
class DemoSummary:
    frames_sent: int
    results: int
    seconds: float
    latency_ms_p50: float
    latency_ms_p95: float
    dead_letters: int


@contextlib.contextmanager
def redis_for_demo() -> Iterator[str]:
    """The configured Redis, or an embedded one for the demo's lifetime."""
    url = Settings.from_env().redis_url
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url


@contextlib.contextmanager
def worker_process(url: str, module: str = WORKER_MODULE) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "REDIS_URL": url}
    command = [sys.executable, "-m", "dramatiq", "pipeline.broker", module, "--processes", "1", "--threads", "4"]
    process = subprocess.Popen(command, env=env)
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
        broker = RedisStreamsBroker(url)
        broker.declare_queue(QUEUE)
        broker.client.delete(RESULT_STREAM)
        _await_consumer(broker, time.time() + timeout)
        started = time.time()
        for number in range(frames):
            frame = {
                "frame_id": uuid.uuid4().hex,
                "camera_id": "demo-camera",
                "captured_at": repr(time.time()),
                "image_data": base64.b64encode(fake_image(number, image_bytes)).decode(),
            }
            broker.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name=ACTOR, args=(frame,), kwargs={}, options={}))
        results = _await_results(broker, RESULT_STREAM, frames, started + timeout)
        elapsed = time.time() - started
        dead = len(broker.dead_letter_queue(QUEUE))
        broker.close()
    latencies = sorted((float(r[b"processed_at"]) - float(r[b"captured_at"])) * 1000 for r in results) or [0.0]
    return DemoSummary(
        frames_sent=frames,
        results=len(results),
        seconds=elapsed,
        latency_ms_p50=statistics.median(latencies),
        latency_ms_p95=latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))],
        dead_letters=dead,
    )


def _await_consumer(broker: RedisStreamsBroker, deadline: float) -> None:
    """Wait until the worker process reads the queue, so latency measures the pipeline, not its boot."""
    stream = broker.keys_for(QUEUE).stream
    broker.run_claim(broker.keys_for(QUEUE), "frameflow-demo", 0)  # creates the group
    while time.time() < deadline:
        if any(group["consumers"] for group in broker.client.xinfo_groups(stream)):
            return
        time.sleep(0.05)


def _await_results(broker: RedisStreamsBroker, stream: str, expected: int, deadline: float) -> list[dict]:
    results: list[dict] = []
    last_id = "0"
    while len(results) < expected and time.time() < deadline:
        block_ms = max(1, int((deadline - time.time()) * 1000))
        response = broker.client.xread({stream: last_id}, block=min(block_ms, 1000))
        for _, entries in response or []:
            for entry_id, fields in entries:
                results.append(fields)
                last_id = entry_id
    return results
