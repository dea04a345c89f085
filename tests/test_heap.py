"""Settling a process's heap (``pipeline/processes/heap.py``): start-up's garbage collected, the rest
frozen out of the collector's scans, once per process, by a processor before it takes frames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from pipeline import ProcessorRegistry
from pipeline.processes import processor as processor_module

from .processor_harness import RecordingProcessor, running

ROOT = Path(__file__).resolve().parent.parent


def test_settle_heap_collects_start_up_garbage_then_freezes_the_rest_once_per_process() -> None:
    # In a child process: a frozen heap is for the life of the process, not of the test.
    script = textwrap.dedent(
        """
        import gc, json, weakref
        from pipeline.processes.heap import settle_heap

        class Node:
            pass

        garbage = Node(); garbage.me = garbage  # a cycle: only the collector frees it
        dropped = weakref.ref(garbage)
        del garbage
        kept = Node()
        frozen_before = gc.get_freeze_count()
        first, second = settle_heap(), settle_heap()
        print(json.dumps({
            "first": first, "second": second, "garbage_freed": dropped() is None,
            "frozen_before": frozen_before, "frozen_after": gc.get_freeze_count(),
            "kept_is_frozen": not any(obj is kept for obj in gc.get_objects()),
        }))
        """
    )
    output = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert output.returncode == 0, output.stderr

    figures = json.loads(output.stdout.strip().splitlines()[-1])
    assert figures["first"] is True and figures["second"] is False, "settled once per process"
    assert figures["garbage_freed"], "start-up's garbage is collected before the freeze"
    assert figures["frozen_before"] == 0 and figures["frozen_after"] > 1000
    assert figures["kept_is_frozen"], "a live start-up object is out of the collector's generations"


def test_a_processor_settles_its_heap_before_it_registers(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered_when_settled: list[bool] = []
    registry = ProcessorRegistry(redis_client)

    def settle() -> bool:
        registered_when_settled.append(registry.get("heap-1") is not None)
        return True

    monkeypatch.setattr(processor_module, "settle_heap", settle)
    with running(RecordingProcessor("heap-1", ["face_detection"], redis_url), redis_client):
        pass
    assert registered_when_settled == [False], "settled once, before any frame could be routed to it"


def test_a_processor_that_opts_out_leaves_the_heap_alone(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(processor_module, "settle_heap", lambda: calls.append(True) or True)
    processor = RecordingProcessor("heap-2", ["face_detection"], redis_url)
    processor.settles_heap = False
    with running(processor, redis_client):
        pass
    assert calls == []
