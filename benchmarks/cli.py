"""``python -m benchmarks``: frameflow side by side with raw redis-py and Dramatiq's brokers.

Every contender runs ``--runs`` times, alternated (run 1 of each, then run 2 of each,
in a rotated order), each time in a fresh process on the one Redis of the run, flushed
before each measurement. The latency runs follow (1 KB, then 100 KB frames). The figures, the ratios the issue
asks for and the machine go into ``docs/benchmarks.md`` (between its generated
markers; the rest of the file is kept) and ``docs/benchmarks.png``.

Redis: ``FRAMEFLOW_BENCH_REDIS_URL`` (its database is flushed), else ``redis-server``
from ``PATH``, else the embedded one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.plan import Contender, LatencyRun, Sizes, contenders, latency_runs
from benchmarks.report import Machine, markdown, write_chart, write_markdown
from benchmarks.server import BenchRedis
from benchmarks.stats import Runs, with_through

ROOT = Path(__file__).resolve().parent.parent


def measure(case: str, url: str, params: dict[str, Any], timeout_s: float = 900) -> dict[str, float]:
    """One measurement in a fresh process; its figures."""
    command = [sys.executable, "-m", "benchmarks.child", case, url, json.dumps(params)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{case} {params} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_all(server: BenchRedis, plan: list[Contender], runs: int) -> Runs:
    results: Runs = {contender.name: [] for contender in plan}
    for run in range(runs):
        order = plan[run % len(plan) :] + plan[: run % len(plan)]  # a different contender goes first each run
        for contender in order:
            server.flush()
            figures = with_through(measure(contender.case, server.url, contender.params))
            results[contender.name].append(figures)
            shown = ", ".join(f"{key} {value:,.0f}" for key, value in figures.items() if not key.endswith("_us"))
            print(f"run {run + 1}/{runs} {contender.name}: {shown}", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs of each contender (default 5)")
    parser.add_argument("--quick", action="store_true", help="smaller runs and a 10 s latency run (about 2 minutes)")
    parser.add_argument("--latency-s", type=float, help="duration of each latency run (default 60 s, --quick 10 s)")
    parser.add_argument("--only", nargs="+", metavar="CONTENDER", help="measure only these contenders")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency runs")
    parser.add_argument("--output", type=Path, default=ROOT / "docs", help="where benchmarks.md/.png go")
    args = parser.parse_args(argv)

    try:
        import matplotlib  # noqa: F401 - the chart is drawn at the end: fail before measuring
    except ImportError:
        parser.error("matplotlib is missing: pip install -e '.[bench]'")
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.latency_s:
        sizes = Sizes(**{**sizes.__dict__, "latency_s": args.latency_s})
    plan = [contender for contender in contenders(sizes) if not args.only or contender.name in args.only]
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    began = time.monotonic()

    server = BenchRedis.start()
    try:
        machine = Machine.describe(server.version(), server.origin)
        print(f"Redis {server.url} ({server.origin}); {len(plan)} contenders x {args.runs} runs", flush=True)
        runs = run_all(server, plan, args.runs)
        latencies: list[tuple[LatencyRun, dict[str, float] | None]] = []
        for latency_run in latency_runs(sizes):
            figures = None
            if not args.no_latency:
                server.flush()
                figures = measure("latency", server.url, latency_run.params, timeout_s=sizes.latency_s + 300)
                runs[latency_run.name] = [figures]  # the targets read them as they read the contenders'
                print(f"{latency_run.name}: {json.dumps(figures)}", flush=True)
            latencies.append((latency_run, figures))
    finally:
        server.stop()

    args.output.mkdir(parents=True, exist_ok=True)
    block = markdown(plan, runs, latencies, sizes, machine, command.strip(), args.runs, started)
    write_markdown(args.output / "benchmarks.md", block)
    write_chart(args.output / "benchmarks.png", plan, runs, latencies)
    print(block)
    elapsed = time.monotonic() - began
    print(f"Wrote {args.output / 'benchmarks.md'} and {args.output / 'benchmarks.png'} in {elapsed:.0f} s.")
