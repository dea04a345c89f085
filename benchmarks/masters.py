"""Does a Redis Cluster's throughput grow with its masters? ``python -m benchmarks.masters``

Issue 21, item 4: on a cluster the hot path's batches (a router's copies to processor
queues on different masters, an ack batch's result entries, releases and ``XACK``) are
written to every master before any reply is read (:mod:`pipeline.streams.cluster`).
This runs the same workload on a cluster of 1 and of 3 masters (:class:`tests.cluster.LocalCluster`,
the system's ``redis-server``), each in a fresh child process:

* **publish**: ``FrameProducer.publish`` of ``--frames`` frames asking for three capabilities,
  each served by one registered processor, not consuming yet (each frame fans out to three
  queues, on three different masters when there are three; the image is claim-checked once);
* **complete**: the three processors (no-op, in the child, ``--capacity`` threads each) start;
  the clock runs from their first result (start-up is not throughput) until every copy's result
  is on the result stream and the queues are empty.

For each phase it reports the rate and the CPU split: the child's own CPU (every thread,
``time.process_time``) and each ``redis-server``'s (``INFO cpu``), in seconds; and for
completion the messages per ack batch (``XACK`` calls, ``INFO commandstats``): the ack
batcher writes what accumulated during its previous write, so faster writes mean smaller
batches and more round trips per message.

``--baseline TREE`` also runs the child on another checkout's ``pipeline`` (e.g. ``git archive
main | tar -x -C /tmp/old``), alternated round by round with this one, so the before and after
of a change are measured in the same run. On a shared 2-core machine the client and the
servers compete for the same cores: read the CPU split with the rates.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROCESSORS = 3
RESULTS = "bench:results"


def child(params: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in this process: the workload on the cluster at ``params["url"]``."""
    import redis

    from benchmarks.case_pipeline import CAPABILITY, NoopProcessor, frame_specs, running
    from benchmarks.timing import Countdown, wait_drained
    from pipeline import FrameProducer, ProcessorRegistry
    from pipeline.streams.connection import connect

    frames, size, capacity = int(params["frames"]), int(params["size"]), int(params["capacity"])
    nodes = [redis.Redis(port=port) for port in params["ports"]]
    monitor = connect(params["url"])
    countdown = Countdown(frames * PROCESSORS)
    processors = []
    for processor_id in params["processor_ids"]:
        processor = NoopProcessor(
            processor_id,
            [f"{CAPABILITY}-{processor_id}"],
            orchestrator_url="",
            capacity=capacity,
            redis_url=params["url"],
            result_stream=RESULTS,
        )
        processor.countdown = countdown
        ProcessorRegistry(monitor, "frameflow").register(processor.info(), ttl_s=600)
        processors.append(processor)
    producer = FrameProducer(params["url"])
    streams = [producer.broker.keys_for(processor.queue_name).stream for processor in processors]
    capabilities = [f"{CAPABILITY}-{processor_id}" for processor_id in params["processor_ids"]]
    specs = [{**spec, "capabilities": capabilities} for spec in frame_specs(frames + 1, size)]
    producer.publish(**specs.pop())  # warm-up: connections, scripts, the router's snapshot
    for stream in streams:
        monitor.delete(stream)

    def publish() -> None:
        for spec in specs:
            if len(producer.publish(**spec).targets) != PROCESSORS:
                raise RuntimeError("a frame did not reach every benchmark processor")

    def complete() -> None:
        countdown.wait(timeout_s=600)
        wait_drained(lambda: monitor.xlen(RESULTS) >= total and not any(monitor.xlen(stream) for stream in streams))

    total = frames * PROCESSORS
    figures = {"publish": _timed(publish, nodes, frames)}
    with contextlib.ExitStack() as stack:
        for processor in processors:
            stack.enter_context(running(processor))
        # The clock starts at the first result: the processors' start-up is not their throughput.
        while not monitor.xlen(RESULTS):
            time.sleep(0.001)
        figures["complete"] = _timed(complete, nodes, total - monitor.xlen(RESULTS))
    producer.close()
    monitor.close()
    return figures


def _timed(phase: Any, nodes: list[Any], count: int) -> dict[str, Any]:
    """Run ``phase``: its rate, the CPU split, and how many ``XACK`` commands (ack batches) the masters ran."""

    def servers() -> list[float]:
        return [float(info["used_cpu_user"]) + float(info["used_cpu_sys"]) for info in (n.info("cpu") for n in nodes)]

    def acks() -> int:
        return sum(int(node.info("commandstats").get("cmdstat_xack", {}).get("calls", 0)) for node in nodes)

    servers_before, acks_before = servers(), acks()
    cpu_before, started = time.process_time(), time.perf_counter()
    phase()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    server_cpu = [after - before for before, after in zip(servers_before, servers(), strict=True)]
    figures = {"rate": count / wall, "wall_s": wall, "client_cpu_s": cpu, "server_cpu_s": server_cpu}
    return {**figures, "ack_batches": acks() - acks_before}


def _processor_ids(cluster: Any) -> list[str]:
    """Three processor ids whose queues are on three different masters of a 3-master cluster
    (the slot ranges are :class:`LocalCluster`'s, whatever the number of masters run now)."""
    from redis.crc import key_slot

    from pipeline.streams.keys import queue_keys
    from tests.cluster import SLOTS

    bounds = [round(SLOTS * index / PROCESSORS) for index in range(PROCESSORS + 1)]
    chosen: dict[int, str] = {}
    for number in range(1, 1000):
        stream = queue_keys("frameflow", f"frames.ready.bench-{number}").stream
        slot = key_slot(stream.encode())
        third = next(index for index in range(PROCESSORS) if bounds[index] <= slot < bounds[index + 1])
        chosen.setdefault(third, f"bench-{number}")
        if len(chosen) == PROCESSORS:
            return [chosen[index] for index in range(PROCESSORS)]
    raise RuntimeError("no three processor ids on different masters")


def _run_child(tree: Path, params: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(tree), str(ROOT)]))}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(params)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the benchmark's child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(trees: dict[str, Path], masters: list[int], rounds: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every (round, masters, code) once, the code alternated inside each cluster; one row each."""
    from tests.cluster import LocalCluster, cluster_server_binary

    binary = cluster_server_binary()
    if binary is None:
        raise SystemExit("the benchmark needs a redis-server with cluster support (set FRAMEFLOW_REDIS_SERVER)")
    rows = []
    for count in masters:
        with LocalCluster(binary, masters=count) as cluster:
            ids = _processor_ids(cluster)
            for round_number in range(rounds):
                for code, tree in trees.items():
                    cluster.flush()
                    run = {**params, "url": cluster.url, "ports": [n.port for n in cluster.nodes], "processor_ids": ids}
                    figures = _run_child(tree, run)
                    rows.append({"masters": count, "code": code, "round": round_number, **figures})
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Medians over the rounds: rate, and the CPU split per 1,000 messages (client / each server)."""
    lines = [
        "| masters | code | phase | messages/s (median) | client CPU ms / 1k | servers' CPU ms / 1k (each) "
        "| messages per ack batch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    keys = sorted({(row["masters"], row["code"]) for row in rows})
    for masters, code in keys:
        runs = [row for row in rows if (row["masters"], row["code"]) == (masters, code)]
        for phase in ("publish", "complete"):
            figures = [run[phase] for run in runs]
            per_1k = [1000 / (f["rate"] * f["wall_s"]) for f in figures]  # thousands of messages per run
            client = statistics.median(f["client_cpu_s"] * k * 1000 for f, k in zip(figures, per_1k, strict=True))
            servers = [
                statistics.median(f["server_cpu_s"][node] * k * 1000 for f, k in zip(figures, per_1k, strict=True))
                for node in range(masters)
            ]
            rate = statistics.median(f["rate"] for f in figures)
            each = " / ".join(f"{value:.0f}" for value in servers)
            batches = [f["rate"] * f["wall_s"] / f["ack_batches"] for f in figures if f["ack_batches"]]
            batch = f"{statistics.median(batches):.1f}" if batches else "-"
            lines.append(f"| {masters} | {code} | {phase} | {rate:,.0f} | {client:.0f} | {each} | {batch} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames published per run (x3 copies)")
    parser.add_argument("--size", type=int, default=1024, help="image bytes per frame")
    parser.add_argument("--capacity", type=int, default=4, help="worker threads per processor")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--masters", default="1,3", help="comma-separated master counts")
    parser.add_argument("--baseline", type=Path, help="another checkout's root, run alternated as 'baseline'")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    trees = {"this": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    params = {"frames": args.frames, "size": args.size, "capacity": args.capacity}
    rows = measure(trees, [int(count) for count in args.masters.split(",")], args.rounds, params)
    print(table(rows))


if __name__ == "__main__":
    main()
