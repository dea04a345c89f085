"""``python -m benchmarks.durability``: what durable publishes cost (``durability="replicated"``: a WAIT each).

Against a primary with one replica of its own (embedded Redis processes on loopback, the replica
``--replicaof`` the primary, ``--repl-diskless-sync no``), one registered processor (a registry
entry whose queue only fills, bounded so memory stays flat) and two producers side by side, the
default one and a durable one, in alternating rounds (the order swapped each round, so a busy
moment of a shared machine falls on both):

* **publish**: frames published one by one from one thread: frames per second, and each call's
  latency (p50, p99 over every call of every round);
* **publish_many**: the same frames in batches (one round trip per batch): frames per second;
* **acks**: messages taken from a queue, then acknowledged each with a result entry written with
  its ack (what a processor's ack carries), through the queue's ack batcher at full speed
  (``submit`` all, then ``flush``): messages per second, for a broker of each durability.

Prints one markdown table: median (min-max) over the rounds for the rates.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import redis

from pipeline.domain.registry import ProcessorInfo, ProcessorRegistry
from pipeline.processes.producer import FrameProducer
from pipeline.streams.broker import RedisStreamsBroker
from pipeline.streams.embedded import EmbeddedRedis

CAPABILITY = "bench"

#: Frames the processor's queue keeps (drop_oldest beyond): the same work for both producers.
QUEUE_BOUND = 2000

#: A small JPEG-like image, about 1 KB (what the cameras benchmark sends).
IMAGE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"

_NO_DISK_SYNC = ["--repl-diskless-sync", "no", "--save", ""]


def frame(index: int) -> dict[str, Any]:
    return {"camera_id": f"cam-{index % 10}", "image": IMAGE, "capabilities": [CAPABILITY], "width": 4, "height": 4}


def one_by_one(producer: FrameProducer, count: int) -> tuple[float, list[float]]:
    """Frames per second publishing ``count`` frames one call each, and each call's latency in ms."""
    latencies = []
    started = time.perf_counter()
    for index in range(count):
        before = time.perf_counter()
        producer.publish(**frame(index))
        latencies.append((time.perf_counter() - before) * 1000)
    return count / (time.perf_counter() - started), latencies


def batched(producer: FrameProducer, count: int, batch: int) -> float:
    """Frames per second publishing ``count`` frames ``batch`` at a time."""
    frames = [frame(index) for index in range(count)]
    started = time.perf_counter()
    for start in range(0, count, batch):
        producer.publish_many(frames[start : start + batch])
    return count / (time.perf_counter() - started)


def acks(broker: RedisStreamsBroker, count: int, queue: str, *, one_at_a_time: bool) -> float:
    """Messages per second acknowledged with one result entry each, ``count`` taken first (untimed) from
    ``queue`` (a new one each time: the acks go to the batcher directly, past the consumer's bookkeeping):
    all submitted, then flushed (the batcher's batches), or ``one_at_a_time`` (an idle processor's)."""
    broker.declare_queue(queue)
    message = dramatiq.Message(queue_name=queue, actor_name="bench", args=(), kwargs={}, options={})
    for _ in range(count):
        broker.enqueue(message)
    consumer = broker.consume(queue, prefetch=count, timeout=100)
    deliveries = []
    while len(deliveries) < count:  # next() is None when a read came back empty: read again
        delivery = next(consumer)
        if delivery is not None:
            deliveries.append(delivery)
    batcher = broker.ack_batcher(queue)
    started = time.perf_counter()
    for delivery in deliveries:
        batcher.submit(delivery.entry_id, [("XADD", "bench:results", "MAXLEN", "~", 1000, "*", "frame", "1")])
        if one_at_a_time:
            batcher.flush()
    batcher.flush()
    rate = count / (time.perf_counter() - started)
    consumer.close()
    return rate


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def linked(primary: redis.Redis, replica: redis.Redis) -> bool:
    return (
        replica.info("replication").get("master_link_status") == "up"
        and primary.info("replication").get("connected_slaves") == 1
    )


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a replica's link state: nothing to wait on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="Frames per producer per round and way.")
    parser.add_argument("--rounds", type=int, default=5, help="Alternating rounds.")
    parser.add_argument("--batch", type=int, default=64, help="Frames per publish_many call.")
    args = parser.parse_args()
    with EmbeddedRedis(extra_args=_NO_DISK_SYNC) as primary_server:
        replica_args = [*_NO_DISK_SYNC, "--replicaof", "127.0.0.1", str(primary_server.port)]
        with EmbeddedRedis(extra_args=replica_args) as replica_server:
            primary, replica = redis.Redis.from_url(primary_server.url), redis.Redis.from_url(replica_server.url)
            wait_for(lambda: linked(primary, replica), 30, "the replica to sync")
            info = ProcessorInfo(
                "bench-1", (CAPABILITY,), 10, "frames.ready.bench-1", "process_frame.bench-1", queue_bound=QUEUE_BOUND
            )
            ProcessorRegistry(primary).register(info, ttl_s=3600)
            producers = {
                "primary (default)": FrameProducer(primary_server.url),
                "replicated": FrameProducer(primary_server.url, durability="replicated"),
            }
            rates: dict[str, list[float]] = {name: [] for name in producers}
            latencies: dict[str, list[float]] = {name: [] for name in producers}
            batch_rates: dict[str, list[float]] = {name: [] for name in producers}
            names = list(producers)
            for name in names:  # a warm-up round each, not counted
                one_by_one(producers[name], 200)
            for round_index in range(args.rounds):
                for name in names if round_index % 2 == 0 else reversed(names):
                    rate, calls = one_by_one(producers[name], args.frames)
                    rates[name].append(rate)
                    latencies[name] += calls
                    batch_rates[name].append(batched(producers[name], args.frames, args.batch))
            for producer in producers.values():
                producer.close()
            brokers = {
                name: RedisStreamsBroker(primary_server.url, durability=durability)
                for name, durability in zip(names, ("primary", "replicated"), strict=True)
            }
            ack_rates: dict[str, list[float]] = {name: [] for name in producers}
            single_ack_rates: dict[str, list[float]] = {name: [] for name in producers}
            for round_index in range(args.rounds):
                for name in names if round_index % 2 == 0 else reversed(names):
                    queue = f"bench-acks-{round_index}"
                    ack_rates[name].append(acks(brokers[name], args.frames, queue, one_at_a_time=False))
                    single = acks(brokers[name], args.frames, f"{queue}-single", one_at_a_time=True)
                    single_ack_rates[name].append(single)
            for broker in brokers.values():
                broker.close()
            version = primary.info("server")["redis_version"]
    print(
        f"Redis {version}, primary + 1 replica on loopback; {args.rounds} rounds x {args.frames} frames "
        f"of {len(IMAGE)} B per way, publish_many in batches of {args.batch}\n"
    )
    print(
        "| durability | publish, frames/s | p50 ms | p99 ms | publish_many, frames/s | acks/s, batched "
        "| acks/s, one by one |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        print(
            f"| {name} | {spread(rates[name])} | {percentile(latencies[name], 0.5):.3f} | "
            f"{percentile(latencies[name], 0.99):.3f} | {spread(batch_rates[name])} | {spread(ack_rates[name])} | "
            f"{spread(single_ack_rates[name])} |"
        )


if __name__ == "__main__":
    main()
