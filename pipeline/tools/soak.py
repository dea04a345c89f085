"""``frameflow soak``: the pipeline under overload, and the books balanced afterwards.

Cameras are always-on and models are slow, so the producer outrunning the
processors is the normal state, not an accident. This runs real processor
processes whose work per frame takes a known time (so their capacity is known),
publishes at ``overload`` times that capacity for ``duration_s``, stops, waits
until every queue is drained, and accounts for every frame: processed, or
dropped with its reason (the queue bound, stale, an expired image, a dead
letter, parked for want of a processor, then stale or beyond the parked bound). It samples Redis's ``used_memory``
against its ``maxmemory`` all along, and measures the latency (capture to
result) and the age at processing start of the frames processed.

The run passes when frames in = processed + counted drops, nothing is left in a
queue, no write was refused and memory stayed under the bound.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
import time

import redis

from pipeline.domain.frames import now_ms
from pipeline.domain.keys import counts_key, parked_drops_key, parked_key, processor_queue
from pipeline.domain.registry import ProcessorRegistry
from pipeline.errors import FrameflowError
from pipeline.processes.launch import run_until_signalled
from pipeline.processes.processor import ProcessorClient
from pipeline.processes.producer import FrameProducer
from pipeline.settings import Settings
from pipeline.streams.connection import connect
from pipeline.streams.keys import queue_keys

from .demo import await_registration, child_process, fake_image, redis_for_demo, since_capture_ms
from .soak_report import DROP_REASONS, Percentiles, SoakPlan, SoakSummary

#: How often the producer tops up to its target rate, and the most it sends in one go.
PRODUCER_TICK_S = 0.01
MAX_BURST = 512

#: How often Redis's memory is sampled.
MEMORY_SAMPLE_S = 0.05


class SoakProcessor(ProcessorClient):
    """Spends ``processing_ms`` on each frame (off the GIL, as a model on a GPU would) and
    says when it started, so the soak can tell how old the frames it worked on were."""

    version = "soak"

    def __init__(self, processor_id: str, plan: SoakPlan, redis_url: str) -> None:
        super().__init__(
            processor_id,
            [plan.capability],
            orchestrator_url="",
            capacity=plan.capacity,
            redis_url=redis_url,
            result_stream=plan.result_stream,
            health_check_interval=5.0,
        )
        self.queue_bound = plan.queue_bound
        self.processing_s = plan.processing_ms / 1000

    def process_frame(self, frame_data: dict[bytes, bytes]) -> dict:  # type: ignore[override]
        started_at_ms = now_ms()
        time.sleep(self.processing_s)
        return {"started_at_ms": started_at_ms}


class MemorySampler(threading.Thread):
    """Samples ``used_memory`` (INFO memory) until stopped; keeps the first sample and the peak."""

    def __init__(self, url: str) -> None:
        super().__init__(name="soak-memory", daemon=True)
        self.client = connect(url)
        self.baseline = self.peak = int(self.client.info("memory")["used_memory"])
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(MEMORY_SAMPLE_S):
            with contextlib.suppress(redis.RedisError):
                self.peak = max(self.peak, int(self.client.info("memory")["used_memory"]))

    def stop(self, *, include_server_peak: bool) -> int:
        """The peak sampled, or the server's own (which misses nothing) when the server is ours."""
        self._stopped.set()
        self.join()
        if include_server_peak:
            self.peak = max(self.peak, int(self.client.info("memory")["used_memory_peak"]))
        self.client.close()
        return self.peak


class ResultCollector(threading.Thread):
    """Reads the result stream as the results come, and deletes what it read (a consumer that is
    done with them), so the memory measured is the pipeline's own."""

    def __init__(self, url: str, stream: str) -> None:
        super().__init__(name="soak-results", daemon=True)
        self.client = connect(url)
        self.stream = stream
        self.latencies: list[float] = []
        self.starts: list[tuple[float, float]] = []  # (started at, age then), epoch ms
        self.frame_ids: set[str] = set()
        self.results = 0
        self._last_id = "0"
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            self._read(block_ms=100)

    def _read(self, block_ms: int | None) -> int:
        reply = self.client.xread({self.stream: self._last_id}, count=1000, block=block_ms)
        entries = reply[0][1] if reply else []
        for entry_id, raw in entries:
            fields = {name.decode(): value.decode("utf-8", "replace") for name, value in raw.items()}
            finished_ms = float(entry_id.split(b"-")[0])  # when the result landed in Redis
            self.latencies.append(since_capture_ms(fields, finished_ms))
            started_ms = float(fields.get("started_at_ms") or 0)
            self.starts.append((started_ms, since_capture_ms(fields, started_ms)))
            self.frame_ids.add(fields.get("frame_id", ""))
            self.results += 1
            self._last_id = entry_id.decode()
        if entries:
            self.client.xdel(self.stream, *(entry_id for entry_id, _ in entries))
        return len(entries)

    def stop(self) -> None:
        self._stopped.set()
        self.join()
        while self._read(block_ms=None):  # what came after the last blocking read
            pass
        self.client.close()


def run_soak(plan: SoakPlan) -> SoakSummary:
    """Run ``plan`` on the configured Redis (or an embedded one bounded by ``plan.max_memory``)."""
    embedded_args = ["--maxmemory", plan.max_memory, "--maxmemory-policy", "noeviction"]
    settings = Settings.from_env()
    namespace = settings.namespace
    with redis_for_demo(embedded_args) as url:
        client = connect(url)
        bound, source = memory_bound(client, plan.max_memory)
        try:
            with contextlib.ExitStack() as processes:
                for processor_id in plan.processor_ids:
                    arguments = [json.dumps(dataclasses.asdict(plan)), processor_id]
                    command = [sys.executable, "-m", "pipeline.tools.soak", *arguments]
                    processes.enter_context(child_process(command, {"REDIS_URL": url}))
                producer = processes.enter_context(contextlib.closing(FrameProducer(url, max_age_ms=plan.max_age_ms)))
                if not await_registration(ProcessorRegistry(client, namespace), plan.processor_ids, 60.0):
                    raise FrameflowError(f"the soak's {plan.processors} processors did not register within 60 s")
                parked_before = parked_drops(client, namespace)
                sampler, collector = MemorySampler(url), ResultCollector(url, plan.result_stream)
                sampler.start()
                collector.start()
                frames_in, refused, seconds, first_error = produce(producer, plan)
                overload_end_ms = now_ms()
                _wait_drained(client, namespace, plan)
                collector.stop()
                drops, left = count_drops(client, namespace, plan, parked_before)
                peak = sampler.stop(include_server_peak=settings.redis_url is None)
        finally:  # once the processors stopped: they would make their queues again
            with contextlib.suppress(redis.RedisError):
                _forget(client, namespace, plan)
            client.close()
    return SoakSummary(
        plan=plan,
        seconds=seconds,
        frames_in=frames_in,
        refused=refused,
        processed=len(collector.frame_ids),
        duplicates=collector.results - len(collector.frame_ids),
        drops=drops,
        left_queued=left,
        memory_baseline=sampler.baseline,
        memory_peak=peak,
        memory_bound=bound,
        memory_bound_source=source,
        processed_fps=sum(1 for started, _ in collector.starts if started <= overload_end_ms) / seconds,
        latency_ms=Percentiles.of(collector.latencies),
        age_ms=Percentiles.of([age for started, age in collector.starts if started <= overload_end_ms]),
        first_error=first_error,
    )


def produce(producer: FrameProducer, plan: SoakPlan) -> tuple[int, int, float, str]:
    """Publish at ``plan.target_fps`` for ``plan.duration_s`` from ``plan.cameras`` cameras.
    Returns (frames accepted, frames refused, seconds, the first refusal)."""
    image = fake_image(0, plan.image_bytes)
    cameras = [f"soak-camera-{number}" for number in range(1, plan.cameras + 1)]
    accepted = refused = 0
    first_error = ""
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < plan.duration_s:
        due = min(MAX_BURST, int(plan.target_fps * elapsed) - accepted - refused)
        if due <= 0:
            time.sleep(PRODUCER_TICK_S)  # pacing, not synchronisation: the next frames are not due yet
            continue
        specs = [
            {
                "camera_id": cameras[(accepted + refused + offset) % len(cameras)],
                "image": image,
                "capabilities": [plan.capability],
                "width": 64,
                "height": 48,
                "format": "raw",
            }
            for offset in range(due)
        ]
        try:
            decisions = producer.publish_many(specs)
        except redis.RedisError as error:  # Redis did not answer
            refused += due
            first_error = first_error or " ".join(str(error).split())
            continue
        refusals = [decision.refused for decision in decisions if decision.refused]  # e.g. OOM: maxmemory reached
        accepted += len(decisions) - len(refusals)
        refused += len(refusals)
        first_error = first_error or (refusals[0] if refusals else "")
    return accepted, refused, time.monotonic() - started, first_error


def _wait_drained(client: redis.Redis, namespace: str, plan: SoakPlan) -> None:
    """Poll until every processor queue (stream and retries) is empty, or a deadline passes:
    a full queue's drain time, three times over, plus the processors' slowest restart."""
    deadline = time.monotonic() + 3 * plan.drain_ms / 1000 + 15
    keys = [queue_keys(namespace, processor_queue(processor_id)) for processor_id in plan.processor_ids]
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for queue in keys:
            pipe.xlen(queue.stream)
            pipe.zcard(queue.delayed)
        if not any(pipe.execute()):
            return
        time.sleep(0.05)


def parked_drops(client: redis.Redis, namespace: str) -> dict[str, int]:
    """The parked drops hash (reason → count): shared by every capability, so read before and after."""
    return {reason.decode(): int(count) for reason, count in client.hgetall(parked_drops_key(namespace)).items()}


def count_drops(
    client: redis.Redis, namespace: str, plan: SoakPlan, parked_before: dict[str, int]
) -> tuple[dict[str, int], int]:
    """Frames dropped by reason (every processor queue's drops hash, its dead letters and the
    parked frames of the soak's capability), and frames still queued."""
    drops = dict.fromkeys(DROP_REASONS, 0)
    left = 0
    for processor_id in plan.processor_ids:
        queue = queue_keys(namespace, processor_queue(processor_id))
        for reason, count in client.hgetall(queue.drops).items():
            name = reason.decode()
            drops[name] = drops.get(name, 0) + int(count)
        drops["dead_letter"] += int(client.xlen(queue.dead))
        left += int(client.xlen(queue.stream)) + int(client.zcard(queue.delayed))
    parked_after = parked_drops(client, namespace)
    for reason in set(parked_before) | set(parked_after):
        drops[f"parked_{reason}"] = parked_after.get(reason, 0) - parked_before.get(reason, 0)
    drops["parked_waiting"] = int(client.xlen(parked_key(namespace, plan.capability)))
    return drops, left


def memory_bound(client: redis.Redis, requested: str) -> tuple[int, str]:
    """The server's ``maxmemory`` when it has one, else ``requested`` (checked by sampling only)."""
    configured = int(client.info("memory").get("maxmemory") or 0)
    if configured:
        return configured, "server maxmemory"
    return parse_memory(requested), "--max-memory (not enforced by the server)"


def parse_memory(text: str) -> int:
    """Redis's memory units: ``64mb`` (MiB), ``64m`` (10^6), ``1gb``, ``512kb``, plain bytes."""
    units = {"kb": 1024, "mb": 1024**2, "gb": 1024**3, "k": 1000, "m": 1000**2, "g": 1000**3, "b": 1}
    value = text.strip().lower()
    for suffix, factor in units.items():
        if value.endswith(suffix) and value[: -len(suffix)].isdigit():
            return int(value[: -len(suffix)]) * factor
    if value.isdigit():
        return int(value)
    raise FrameflowError(f"bad memory size {text!r}: expected e.g. 64mb, 512kb, 1gb or a number of bytes")


def _forget(client: redis.Redis, namespace: str, plan: SoakPlan) -> None:
    """Leave a shared Redis as it was: the run's queues, counts and results go."""
    keys: list[str] = [plan.result_stream, parked_key(namespace, plan.capability)]
    for processor_id in plan.processor_ids:
        queue_name = processor_queue(processor_id)
        queue = queue_keys(namespace, queue_name)
        keys += [*queue, counts_key(namespace, queue_name)]  # every companion key of the queue
    client.delete(*keys)


def main(argv: list[str]) -> None:
    """``python -m pipeline.tools.soak PLAN_JSON PROCESSOR_ID``: one soak processor, until SIGTERM."""
    plan = SoakPlan(**json.loads(argv[0]))
    run_until_signalled(SoakProcessor(argv[1], plan, os.environ["REDIS_URL"]))


if __name__ == "__main__":
    main(sys.argv[1:])
