"""frameflow's pipeline: ``FrameProducer`` → routing → ``ProcessorClient`` → result stream.

``run``: frames of ``size`` bytes are published one by one (timed: the publish rate) to
a registered no-op processor that is not consuming yet; then the processor starts (the
seed's way, ``asyncio.run(processor.start())``, ``capacity`` worker threads) and the
clock runs until every frame's result is on the result stream and the queue is drained.
The processor's shutdown comes after the clock stops, as the bare broker's ``worker.stop()``
does in :mod:`benchmarks.case_dramatiq` (timed, it added about half a second, a worker
thread's idle poll, to every run: a third of the 1 KB run's time).
Each frame goes to one processor, so its image travels inline, raw, whatever its size.

``run_publish_many``: the same frames through ``FrameProducer.publish_many`` in batches
of ``batch`` (timed), nobody consuming.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from benchmarks.timing import Countdown, Phase, wait_drained
from pipeline import FrameProducer, ProcessorClient, ProcessorRegistry

RESULTS = "bench:results"
CAPABILITY = "bench"
#: Frames stay fresh for the whole run (the default 5 s would skip frames queued before the processor starts).
MAX_AGE_MS = 3_600_000


class NoopProcessor(ProcessorClient):
    """Returns a one-field result for every frame at once."""

    queue_bound = 0  # the benchmark queues every frame before the processor starts
    countdown: Countdown | None = None

    def process_frame(self, frame_data: dict[bytes, bytes]) -> dict:  # type: ignore[override]
        if self.countdown is not None:
            self.countdown.tick()
        return {"ok": True}


def frame_specs(count: int, size: int) -> Iterator[dict[str, Any]]:
    image = os.urandom(size)
    for index in range(count):
        yield {
            "camera_id": f"cam-{index % 10}",
            "image": image,
            "capabilities": [CAPABILITY],
            "width": 640,
            "height": 480,
            "max_age_ms": MAX_AGE_MS,
        }


def make_processor(url: str, capacity: int, countdown: Countdown | None = None) -> NoopProcessor:
    processor = NoopProcessor(
        "bench-noop", [CAPABILITY], orchestrator_url="", capacity=capacity, redis_url=url, result_stream=RESULTS
    )
    processor.countdown = countdown
    return processor


@contextmanager
def running(processor: ProcessorClient) -> Iterator[Callable[[], None]]:
    """Gives a function that starts the processor consuming, the seed's way, on a thread of its
    own; stops it, if started, on the way out."""
    thread = threading.Thread(target=asyncio.run, args=(processor.start(),), daemon=True)
    try:
        yield thread.start
    finally:
        processor.stop()
        if thread.ident is not None:
            thread.join(timeout=60)


def run(url: str, params: dict[str, Any]) -> dict[str, float]:
    frames, size, capacity = int(params["frames"]), int(params["size"]), int(params["capacity"])
    monitor = redis.Redis.from_url(url)
    countdown = Countdown(frames)
    processor = make_processor(url, capacity, countdown)
    ProcessorRegistry(monitor, "frameflow").register(processor.info(), ttl_s=600)  # routable, not consuming yet
    producer = FrameProducer(url)
    stream = producer.broker.keys_for(processor.queue_name).stream

    specs = list(frame_specs(frames, size))
    producer.publish(**specs[0])  # warm-up: connections, scripts, the router's snapshot
    monitor.delete(stream)
    with Phase(monitor) as publishing:
        for spec in specs:
            if not producer.publish(**spec).targets:
                raise RuntimeError("a frame was not routed to the benchmark's processor")

    # Phase inside running: its clock stops before the processor's shutdown begins.
    with running(processor) as start, Phase(monitor) as completing:
        start()
        countdown.wait(timeout_s=600)
        wait_drained(lambda: monitor.xlen(RESULTS) >= frames and monitor.xlen(stream) == 0)
    producer.close()
    monitor.close()
    return {**publishing.figures("send", frames), **completing.figures("complete", frames)}


def run_publish_many(url: str, params: dict[str, Any]) -> dict[str, float]:
    frames, size, batch = int(params["frames"]), int(params["size"]), int(params["batch"])
    monitor = redis.Redis.from_url(url)
    processor = make_processor(url, 1)
    ProcessorRegistry(monitor, "frameflow").register(processor.info(), ttl_s=600)
    producer = FrameProducer(url)
    specs = list(frame_specs(frames, size))
    producer.publish_many(specs[:batch])  # warm-up
    with Phase(monitor) as publishing:
        for start in range(0, frames, batch):
            decisions = producer.publish_many(specs[start : start + batch])
            if not all(decision.targets for decision in decisions):
                raise RuntimeError("a frame was not routed to the benchmark's processor")
    producer.close()
    monitor.close()
    return publishing.figures("send", frames)
