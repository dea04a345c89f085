"""Where the claim check pays: fan-out frames with the image in every copy, or stored once.

``python -m benchmarks.claim_check`` publishes frames that fan out to ``copies`` processors
through the real ``FrameProducer`` and router, once with every image inline in each copy and
once claim-checked (stored once, one ``GET`` per copy, a release with each ack), alternated
run by run on one Redis, then does what each processor's intake does with each copy: read it
(``XREADGROUP``, a batch at a time), decode it, fetch its image (:func:`frame_data_of`) and
acknowledge it with its release in one pipeline. It prints the microseconds per frame (publish
and consume) of each way, and the Redis memory the queued copies took. The router's
``CLAIM_CHECK_ABOVE`` is set from where stored starts to beat inline (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
from typing import Any

import redis

from benchmarks.server import BenchRedis
from benchmarks.timing import Phase
from pipeline import FrameProducer, ProcessorInfo, ProcessorRegistry
from pipeline.domain.claim_check import release_commands
from pipeline.processes.intake import checked_frame, frame_data_of
from pipeline.streams.wire import decode_entry

#: Bytes of images one measurement may queue (every copy counted when inline).
BUDGET_BYTES = 48 * 1024 * 1024
#: Copies read per XREADGROUP, as a processor of capacity 8 prefetches.
READ_BATCH = 8
#: Frames stay fresh for the whole measurement.
MAX_AGE_MS = 3_600_000
INLINE, STORED = "inline", "stored"


def _register(client: redis.Redis, copies: int) -> list[ProcessorInfo]:
    infos = [
        ProcessorInfo(
            processor_id=f"cc-{index}",
            capabilities=(f"cap-{index}",),
            capacity=8,
            queue_name=f"frames.ready.cc-{index}",
            actor_name=f"process_frame.cc-{index}",
            queue_bound=0,
        )
        for index in range(copies)
    ]
    for info in infos:
        ProcessorRegistry(client).register(info, ttl_s=600)
    return infos


def _consume(producer: FrameProducer, info: ProcessorInfo) -> int:
    """What a processor's intake does with every copy on its queue; returns the copies handled."""
    broker = producer.broker
    keys = broker.keys_for(info.queue_name)
    client = broker.client
    with contextlib.suppress(redis.ResponseError):  # the router made it with the queue
        client.xgroup_create(keys.stream, broker.group, id="0", mkstream=True)
    handled = 0
    while True:
        reply = client.xreadgroup(broker.group, "bench", {keys.stream: ">"}, count=READ_BATCH)
        entries = reply[0][1] if reply else []
        if not entries:
            return handled
        commands: list[tuple[Any, ...]] = []
        for entry_id, fields in entries:
            frame = checked_frame(decode_entry(fields).args, {}, 1 << 30)
            ref = frame.get("image_ref")
            frame_data = frame_data_of(broker, info.queue_name, frame, 1 << 30)
            if len(frame_data.image) == 0:
                raise RuntimeError("an empty image")
            commands += [("XACK", keys.stream, broker.group, entry_id), ("XDEL", keys.stream, entry_id)]
            commands += release_commands(broker, [ref]) if isinstance(ref, str) else []
        broker.direct.execute_many(commands, scripts=broker.scripts_by_sha)
        handled += len(entries)


def measure(url: str, copies: int, size: int, mode: str) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    client.flushdb()
    infos = _register(client, copies)
    producer = FrameProducer(url)
    producer.router.claim_check_above = 0 if mode == STORED else 1 << 62
    frames = max(50, min(2000, BUDGET_BYTES // (copies * size)))
    image = os.urandom(size)
    spec = {
        "camera_id": "cam-1",
        "image": image,
        "capabilities": [info.capabilities[0] for info in infos],
        "width": 640,
        "height": 480,
        "max_age_ms": MAX_AGE_MS,
    }
    producer.publish(**spec)  # warm-up: connections, scripts, the router's snapshot
    for info in infos:
        _consume(producer, info)
    memory_before = int(client.info("memory")["used_memory"])
    with Phase(client) as publishing:
        for _ in range(frames):
            if len(producer.publish(**spec).targets) != copies:
                raise RuntimeError("a frame did not reach every processor")
    memory = int(client.info("memory")["used_memory"]) - memory_before
    with Phase(client) as consuming:
        handled = sum(_consume(producer, info) for info in infos)
    if handled != frames * copies:
        raise RuntimeError(f"{handled} copies handled, {frames * copies} expected")
    producer.close()
    client.close()
    return {
        "publish_us": publishing.wall / frames * 1e6,
        "consume_us": consuming.wall / frames * 1e6,
        "total_us": (publishing.wall + consuming.wall) / frames * 1e6,
        # CPU (this process's and Redis's) stays comparable when other work shares the machine.
        "cpu_us": sum(phase.cpu + phase.redis_cpu for phase in (publishing, consuming)) / frames * 1e6,
        "memory_per_frame": memory / frames,
    }


def _way(figures: dict[str, float]) -> str:
    return (
        f"{figures['total_us']:>7,.0f} ({figures['publish_us']:,.0f}+{figures['consume_us']:,.0f}),"
        f" {figures['cpu_us']:,.0f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", default="2,3", help="fan-out widths, comma-separated")
    parser.add_argument("--sizes-kb", default="1,4,16,64,256,1024", help="image sizes in KiB, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs of each way, alternated")
    args = parser.parse_args(argv)
    server = BenchRedis.start()
    try:
        print(f"Redis {server.version()} ({server.origin}); {args.runs} runs of each way, alternated")
        print(
            "copies  size KiB  inline µs/frame wall (pub+con), CPU  stored µs/frame wall (pub+con), CPU"
            "  stored/inline wall, CPU  memory/frame inline / stored"
        )
        for copies in (int(item) for item in args.copies.split(",")):
            for size_kb in (int(item) for item in args.sizes_kb.split(",")):
                figures: dict[str, list[dict[str, float]]] = {INLINE: [], STORED: []}
                for run in range(args.runs):
                    order = (INLINE, STORED) if run % 2 == 0 else (STORED, INLINE)
                    for mode in order:
                        figures[mode].append(measure(server.url, copies, size_kb * 1024, mode))
                inline, stored = (
                    {name: statistics.median(item[name] for item in figures[mode]) for name in figures[mode][0]}
                    for mode in (INLINE, STORED)
                )
                print(
                    f"{copies:>6}  {size_kb:>8}  {_way(inline)}  {_way(stored)}"
                    f"  {stored['total_us'] / inline['total_us']:>5.2f}, {stored['cpu_us'] / inline['cpu_us']:.2f}"
                    f"  {inline['memory_per_frame'] / 1024:,.0f} / {stored['memory_per_frame'] / 1024:,.0f} KiB",
                    flush=True,
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
