"""Where a case spends its time: ``python -m benchmarks.profile CASE [PARAMS_JSON]``.

Runs one case (:mod:`benchmarks.child`) under py-spy (``pip install py-spy``, in the
``bench`` extra) on the Redis the benchmark would use, and prints, per phase, the
functions with the most samples: *own* (the function itself was running) and *total*
(it was on the stack), as percentages of the phase's samples, as markdown tables.

By default only the thread holding the GIL is sampled (``--gil``: where the Python
CPU goes); ``--all-threads`` samples every thread that is not idle (where threads
wait). Imports are left out. The phases: *send* (stacks under ``Actor.send`` or
``publish``) and *complete* (stacks of worker, consumer and ack threads).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.child import CASES
from benchmarks.server import BenchRedis

DEFAULT_PARAMS: dict[str, tuple[str, dict[str, object]]] = {
    "frameflow": ("dramatiq", {"broker": "frameflow", "messages": 20000, "threads": 8}),
    "stock": ("dramatiq", {"broker": "stock", "messages": 10000, "threads": 8}),
    "stub": ("dramatiq", {"broker": "stub", "messages": 40000, "threads": 8}),
    "pipeline": ("pipeline", {"frames": 8000, "size": 1024, "capacity": 8}),
    "publish_many": ("publish_many", {"frames": 40000, "size": 1024, "batch": 1000}),
}


#: Phase → a frame name that marks its stacks.
PHASES = {"send": ("Actor.send ", "publish ", "publish_many "), "complete": ("Thread._bootstrap_inner ",)}


def summarize(
    collapsed: str, top: int = 15, markers: tuple[str, ...] = ()
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The ``top`` functions by own and by total share of the samples in py-spy's raw output
    (only stacks holding one of ``markers``, when given; never imports)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit() or "_find_and_load" in stack:
            continue
        if markers and not any(marker in stack for marker in markers):
            continue
        count = int(count_text)
        samples += count
        frames = [_short(frame) for frame in stack.split(";")[1:]]  # the first is the thread
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    share = 100.0 / max(1, samples)
    below_roots = [(name, count) for name, count in total.most_common() if count < samples]  # not on every stack
    return (
        [(name, count * share) for name, count in own.most_common(top)],
        [(name, count * share) for name, count in below_roots[:top]],
    )


def _short(frame: str) -> str:
    """``function (path/to/file.py:12)`` → ``function (file.py)``: lines differ from sample to sample."""
    name, _, where = frame.partition(" (")
    path = where.split(":")[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = Path(path).name
    return f"{name} ({path})"


def markdown(rows: list[tuple[str, float]], heading: str) -> str:
    lines = [f"| {heading} | % of samples |", "| --- | ---: |"]
    lines += [f"| `{name}` | {percent:.1f} |" for name, percent in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", help=f"a contender ({', '.join(DEFAULT_PARAMS)}) or a case of {sorted(CASES)}")
    parser.add_argument("params", nargs="?", help="the case's parameters as JSON (default: the contender's)")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--all-threads", action="store_true", help="sample every non-idle thread, not the GIL holder")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    case, params = DEFAULT_PARAMS.get(args.case, (args.case, {}))
    if args.params:
        params = json.loads(args.params)
    server = BenchRedis.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            output = Path(folder) / "profile.txt"
            command = [sys.executable, "-m", "benchmarks.child", case, server.url, json.dumps(params)]
            gil = [] if args.all_threads else ["--gil"]
            subprocess.run(
                [py_spy, "record", *gil, "-r", str(args.rate), "-f", "raw", "-o", str(output), "--", *command],
                check=True,
                stderr=subprocess.DEVNULL,
            )
            collapsed = output.read_text()
    finally:
        server.stop()
    for phase, markers in PHASES.items():
        own, total = summarize(collapsed, args.top, markers)
        if not own:
            continue
        print(f"#### {args.case}: {phase}\n")
        print(markdown(own, "own time"))
        print()
        print(markdown(total, "total time (on the stack)"))
        print()


if __name__ == "__main__":
    main()
