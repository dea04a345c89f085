"""Render the fault tests' figures as the README's markdown table.

``FRAMEFLOW_FAULT_REPORT=faults.jsonl pytest tests/test_chaos.py`` appends one JSON
line per fault (see ``tests/chaos.py``); this prints them as a table::

    python scripts/fault_table.py faults.jsonl

A fault run more than once (the file is appended to) shows its latest figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLUMNS = ("fault", "frames accepted", "processed", "duplicated", "dropped with reason", "lost")


def dropped_cell(dropped: dict[str, int]) -> str:
    """``0``, or each reason with its count: ``12 (bound: 10, stale: 2)``."""
    total = sum(dropped.values())
    if not total:
        return "0"
    reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(dropped.items()))
    return f"{total} ({reasons})"


def accepted_cell(figures: dict) -> str:
    """The accepted frames, with the publishes that raised: Redis away, or (durable) no replica confirmed."""
    refusals = [(figures.get("refused", 0), "refused while Redis was down")]
    refusals.append((figures.get("not_replicated", 0), "refused as not replicated"))
    said = "; ".join(f"{count} {reason}" for count, reason in refusals if count)
    return f"{figures['accepted']} ({said})" if said else str(figures["accepted"])


def render(lines: list[str]) -> str:
    latest: dict[str, dict] = {}
    for line in lines:
        if line.strip():
            figures = json.loads(line)
            latest[figures["fault"]] = figures
    rows = [
        (
            figures["fault"],
            accepted_cell(figures),
            str(figures["processed"]),
            str(figures["duplicated"]),
            dropped_cell(figures["dropped"]),
            str(figures["lost"]),
        )
        for figures in latest.values()
    ]
    table = [f"| {' | '.join(COLUMNS)} |", f"| {' | '.join('---' for _ in COLUMNS)} |"]
    table += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="the JSON lines FRAMEFLOW_FAULT_REPORT collected")
    args = parser.parse_args(argv)
    try:
        lines = args.report.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        print(f"fault_table: cannot read {args.report}: {error.strerror}", file=sys.stderr)
        return 1
    if not any(line.strip() for line in lines):
        print(
            f"fault_table: {args.report} holds no figures; run the fault tests with FRAMEFLOW_FAULT_REPORT",
            file=sys.stderr,
        )
        return 1
    print(render(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
