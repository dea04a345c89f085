"""Running the ``frameflow`` command in tests: in this process (click's runner) or as a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from pipeline.tools.cli import output as cli_output
from pipeline.tools.cli.main import main

#: The repository root (the Procfile, compose/ and the test modules live under it).
ROOT = Path(__file__).resolve().parent.parent

#: ``frameflow`` as a real process, whatever is on PATH.
FRAMEFLOW = [sys.executable, "-m", "pipeline.tools.cli"]

#: Wide enough for every table, so rows are never wrapped.
COLUMNS = 220


def frameflow(redis_url: str, *args: str, input: str | None = None) -> Result:
    """``frameflow --redis-url REDIS_URL ARGS...`` in this process; exceptions other than exits propagate."""
    consoles = (cli_output.console, cli_output.err_console)
    widths = [console.width for console in consoles]
    for console in consoles:
        console.width = COLUMNS
    try:
        return CliRunner().invoke(main, ["--redis-url", redis_url, *args], input=input, catch_exceptions=False)
    finally:
        for console, width in zip(consoles, widths, strict=True):
            console.width = width


def frameflow_process(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """``frameflow ARGS...`` as a real process, to see exactly what a person sees (exit code, stderr)."""
    return subprocess.run(
        [*FRAMEFLOW, *args],
        env={**os.environ, "COLUMNS": str(COLUMNS), **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def table_row(output: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row for {first_cell!r} in:\n{output}")


def table_header(output: str, title: str) -> list[str]:
    """The column names of the table titled ``title``."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.strip() == title:
            for header in lines[index + 1 :]:
                if "┃" in header and not set(header.strip()) <= set("┏┳┓━"):
                    return [cell.strip() for cell in header.split("┃")[1:-1]]
    raise AssertionError(f"no table titled {title!r} in:\n{output}")
