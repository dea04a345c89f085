"""Helpers of the observability tests: the processes of ``tests/observed.py``, their
environment (``OTEL_*`` and ``FRAMEFLOW_*`` only), and the spans they export.

Nothing here sleeps to synchronise: spans and registrations are polled for with a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from pipeline import ProcessorRegistry

from .processes import ROOT, WorkerProcess, wait_until

Spans = list[dict[str, Any]]


def observed_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a test process: this one's, minus any OTEL_/FRAMEFLOW_/REDIS_ settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "FRAMEFLOW_", "REDIS_", "PYTHONWARNINGS"))
    }
    env.update(REDIS_URL=redis_url, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def traced_env(redis_url: str, trace_file: Path, service: str, **extra: str) -> dict[str, str]:
    """... with tracing on: spans as JSON lines in ``trace_file``, exported within 20 ms."""
    return observed_env(
        redis_url,
        OTEL_TRACES_EXPORTER="jsonfile",
        OTEL_SERVICE_NAME=service,
        OTEL_BSP_SCHEDULE_DELAY="20",
        FRAMEFLOW_TRACE_FILE=str(trace_file),
        **extra,
    )


def observed(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.observed", *args]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a short-lived process to its end; fail with its stderr if it fails."""
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{args} exited {done.returncode}: {done.stderr}"
    return done


def read_spans(path: Path) -> Spans:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spans_where(path: Path, predicate: Callable[[dict[str, Any]], bool], count: int, what: str) -> Spans:
    """Poll ``path`` until ``count`` spans match ``predicate`` (they are exported in batches)."""
    return wait_until(
        lambda: len(found := [span for span in read_spans(path) if predicate(span)]) >= count and found,
        15,
        f"{count} span(s) of {what} in {path.name}",
    )


def traceparent(trace_context: str) -> tuple[str, str]:
    """(trace id, parent span id) of a ``trace_context`` field."""
    _, trace_id, span_id, _ = json.loads(trace_context)["traceparent"].split("-")
    return trace_id, span_id


class Processes:
    """Long-running processes of one test, each logging to ``<tmp_path>/<name>.log``."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[WorkerProcess] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> WorkerProcess:
        process = WorkerProcess(command, env, self.tmp_path / f"{name}.log")
        self.started.append(process)
        return process

    def processor(self, client: redis.Redis, env: dict[str, str], processor_id: str, *extra: str) -> WorkerProcess:
        """``tests.observed processor`` with capability ``traced``, once it registered."""
        worker = self.start(processor_id, observed("processor", processor_id, "traced", *extra), env)
        registry = ProcessorRegistry(client)
        wait_until(
            lambda: registry.get(processor_id) is not None or not worker.alive(),
            30,
            lambda: f"{processor_id} to register; its log:\n{worker.log_tail()}",
        )
        assert worker.alive(), worker.log_tail()
        return worker

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()
