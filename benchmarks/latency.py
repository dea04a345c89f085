"""Latency at a fixed rate: ``cameras`` x ``fps`` frames per second for ``duration_s`` through the pipeline.

A no-op processor runs in a process of its own (``python -m benchmarks.latency URL``,
the seed's way). This process is the cameras (and, as ``frameflow cameras run`` does, settles its heap before the
first frame: :mod:`pipeline.processes.heap`): each frame is published at its due
time (camera ``k``'s frame ``j`` at ``j / fps + k / (cameras * fps)`` s), stamped with
its capture time just before ``publish``; a reader thread blocks on the result stream
and notes when each result arrives. End-to-end latency is arrival - capture.

Redis ``used_memory`` is read before the first frame (after one warm-up frame per camera
went through, so every key the pipeline keeps exists already: each camera's preview,
the size of its frames, is one) and again once every
result arrived and the processor's queue is drained, with the result stream still
there and after it is deleted (results are the pipeline's output, kept until their
consumer trims them; the queues are what must leave nothing behind), and so is what
the keys hold (every key's ``MEMORY USAGE``): ``used_memory`` also moves with the
clients' query buffers (a connection that just sent a 100 KB frame keeps its buffer
a while) and the allocator's state, so the target is judged on the keys. The resident
memory (RSS) of the two processes, the cameras' and the processor's, is read at the
same two moments, for the record: a Python process keeps memory it freed for reuse,
so RSS shows growth, not leaks, and only Redis's memory is held to its starting level.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis

from benchmarks.case_pipeline import CAPABILITY, RESULTS
from pipeline import FrameProducer, ProcessorClient, ProcessorRegistry
from pipeline.domain.keys import processor_queue
from pipeline.processes.heap import settle_heap

PROCESSOR_ID = "bench-latency"


class LatencyProcessor(ProcessorClient):
    """A no-op processor with the defaults a real one has (bounded queue, fresh frames only)."""

    def process_frame(self, frame_data: dict[bytes, bytes]) -> dict:  # type: ignore[override]
        return {"ok": True}


def serve(url: str) -> None:
    """The processor process: consume until SIGTERM."""
    processor = LatencyProcessor(PROCESSOR_ID, [CAPABILITY], orchestrator_url="", redis_url=url, result_stream=RESULTS)

    async def main() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, processor.stop)
        await processor.start()

    asyncio.run(main())


class ArrivalClock(threading.Thread):
    """Notes the arrival time of every result entry (``XREAD BLOCK``)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.arrivals: dict[str, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        cursor = "0-0"
        while not self.stopping.is_set():
            response = self.client.xread({RESULTS: cursor}, block=100, count=1000)
            now = time.time()
            for _, entries in response or ():
                for entry_id, fields in entries:
                    cursor = entry_id
                    self.arrivals[fields[b"frame_id"].decode()] = now


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def kept(client: redis.Redis) -> int:
    """What the pipeline keeps in Redis: every key's ``MEMORY USAGE`` (all of it sampled), summed.
    ``used_memory`` also counts the clients' buffers and the allocator's state, which move with
    the traffic of the moment rather than with what is stored."""
    return sum(int(client.memory_usage(key, samples=0) or 0) for key in client.scan_iter(count=1000))


def rss(pid: int) -> int:
    """The resident memory of process ``pid`` in bytes (Linux's ``/proc``; 0 where there is none)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def run(url: str, params: dict[str, Any]) -> dict[str, float]:
    cameras, fps, duration_s = int(params["cameras"]), int(params["fps"]), float(params["duration_s"])
    client = redis.Redis.from_url(url)
    registry = ProcessorRegistry(client, "frameflow")
    worker = subprocess.Popen([sys.executable, "-m", "benchmarks.latency", url], env=os.environ.copy())
    try:
        wait_for(lambda: any(info.processor_id == PROCESSOR_ID for info in registry.list()), 60, "the processor")
        producer = FrameProducer(url)
        settle_heap()  # this process stands in for `frameflow cameras run`, which does so before its first frame
        stream = producer.broker.keys_for(processor_queue(PROCESSOR_ID)).stream
        reader = ArrivalClock(url)
        reader.start()
        image = os.urandom(int(params["size"]))
        spec = {"image": image, "capabilities": [CAPABILITY], "width": 640, "height": 480}

        warm_ups = [producer.publish(camera_id=f"cam-{camera}", **spec).frame_id for camera in range(cameras)]
        wait_for(lambda: all(frame_id in reader.arrivals for frame_id in warm_ups), 30, "the warm-up results")
        reader.stopping.set()
        reader.join()
        client.delete(RESULTS)
        reader = ArrivalClock(url)
        reader.start()
        memory_before, kept_before = used_memory(client), kept(client)
        rss_before = rss(os.getpid()) + rss(worker.pid)

        captured: dict[str, float] = {}
        period = 1.0 / (cameras * fps)
        total = int(duration_s * cameras * fps)
        started = time.monotonic()
        for index in range(total):
            delay = started + index * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.time()
            decision = producer.publish(
                camera_id=f"cam-{index % cameras}", timestamp=datetime.fromtimestamp(now, UTC), **spec
            )
            captured[decision.frame_id] = now
        published_in = time.monotonic() - started

        wait_for(lambda: client.xlen(stream) == 0, 60, "the processor queue to drain")
        wait_for(lambda: len(reader.arrivals) >= total or time.monotonic() - started > duration_s + 60, 90, "results")
        memory_drained = used_memory(client)
        reader.stopping.set()
        reader.join()
        client.delete(RESULTS)
        memory_after, kept_after = used_memory(client), kept(client)
        rss_after = rss(os.getpid()) + rss(worker.pid)
        producer.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)

    latencies = sorted(
        (reader.arrivals[frame_id] - at) * 1000 for frame_id, at in captured.items() if frame_id in reader.arrivals
    )
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "frames": float(total),
        "rate": total / published_in,
        "p50_ms": quantiles[49],
        "p95_ms": quantiles[94],
        "p99_ms": quantiles[98],
        "max_ms": latencies[-1],
        "missing": float(total - len(latencies)),
        "memory_before": float(memory_before),
        "memory_drained": float(memory_drained),
        "memory_after": float(memory_after),
        "kept_before": float(kept_before),
        "kept_after": float(kept_after),
        "kept_drift": float(kept_after - kept_before),
        "size": float(params["size"]),
        "rss_before": float(rss_before),
        "rss_after": float(rss_after),
    }


if __name__ == "__main__":
    serve(sys.argv[1])
