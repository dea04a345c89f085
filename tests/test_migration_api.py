"""The original client's public API on ``ProcessorClient`` (issue 18, part 1; README "Migrating").

Code written against detektr's frame-buffer-v2 ``ProcessorClient`` calls ``register``,
``unregister``, ``publish_result``, ``get_metrics``, ``get_available_capacity``,
``is_at_capacity``, ``update_configuration``, ``async with`` and ``processor.id``. Where the
effect crosses processes (the registry a router reads, a result stream a reader follows), the
processor is a real process (:mod:`tests.migrating_processor`) and the test watches from outside.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline import FrameProducer, ProcessorRegistry
from pipeline.errors import ConfigurationRefused, ResultRefused

from .cli_harness import frameflow
from .migrating_processor import RESULT_STREAM, answers_key, calls_key
from .processes import ROOT, WorkerProcess
from .processor_harness import RecordingProcessor, publish, running, wait_for


@pytest.fixture
def producer(redis_url: str, redis_client: redis.Redis) -> Iterator[FrameProducer]:
    producer = FrameProducer(redis_url)
    yield producer
    producer.close()


class DrivenProcessor:
    """A :mod:`tests.migrating_processor` process, and a way to call its methods inside it."""

    def __init__(self, process: WorkerProcess, client: redis.Redis, processor_id: str) -> None:
        self.process, self.client, self.processor_id = process, client, processor_id

    def call(self, method: str, *argument: Any) -> Any:
        request = {"call": method, **({"argument": argument[0]} if argument else {})}
        self.client.rpush(calls_key(self.processor_id), json.dumps(request))
        popped = self.client.blpop([answers_key(self.processor_id)], timeout=20)
        assert popped is not None, f"{self.processor_id} never answered {method}:\n{self.process.log_tail()}"
        answer = json.loads(popped[1])
        assert "error" not in answer, f"{method} failed in the processor: {answer['error']}"
        return answer["value"]


@pytest.fixture
def driven(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[DrivenProcessor]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("REDIS_", "FRAMEFLOW_"))}
    env.update(REDIS_URL=redis_url, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "tests.migrating_processor", "migrant-1", "face_detection"]
    process = WorkerProcess(command, env, tmp_path / "migrant.log")
    registry = ProcessorRegistry(redis_client)
    try:
        wait_for(
            lambda: registry.get("migrant-1") is not None or not process.alive(),
            timeout=30,
            what="the migrating processor to register",
        )
        assert process.alive(), process.log_tail()
        yield DrivenProcessor(process, redis_client, "migrant-1")
    finally:
        assert process.stop() == 0, process.log_tail()
    assert "Traceback" not in process.log_path.read_text(), process.log_tail()


# -- across processes: the registry, the router, a result reader -----------------------------------
def test_update_configuration_is_seen_by_the_registry_and_the_router(
    driven: DrivenProcessor, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    registry = ProcessorRegistry(redis_client)
    before = publish(producer, ["object_detection"])
    assert before.targets == (), "nothing offers object_detection yet: the frame is parked"

    driven.call("update_configuration", {"capacity": 5, "capabilities": ["face_detection", "object_detection"]})

    info = registry.get("migrant-1")
    assert info is not None
    assert (info.capacity, info.capabilities) == (5, ("face_detection", "object_detection"))
    producer.router.invalidate()  # what its cache would do within refresh_s
    assert publish(producer, ["object_detection"]).targets == ("migrant-1",)
    metrics = driven.call("get_metrics")
    assert (metrics["capacity"], metrics["capabilities"]) == (5, ["face_detection", "object_detection"])
    seen = wait_for(
        lambda: {entry.get("seen") for _, entry in _results(redis_client)} >= {before.frame_id},
        what="the parked frame to reach the processor that now offers its capability",
    )
    assert seen
    wait_for(lambda: registry.get("migrant-1").processed >= 2, what="heartbeats to carry on after the change")
    info = registry.get("migrant-1")
    assert info is not None and info.capacity == 5, "a heartbeat must not restore the old capacity"


def test_unregister_stops_routing_until_register(
    driven: DrivenProcessor, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    registry = ProcessorRegistry(redis_client)
    assert publish(producer, ["face_detection"]).targets == ("migrant-1",)

    driven.call("unregister")
    assert registry.get("migrant-1") is None
    driven.call("unregister")  # idempotent
    producer.router.invalidate()
    assert publish(producer, ["face_detection"]).targets == ()
    observed_until = time.monotonic() + 3 * 0.5 + 0.5  # three heartbeat intervals and some
    while time.monotonic() < observed_until:  # heartbeats go on in the process: none may register it again
        assert registry.get("migrant-1") is None, "a heartbeat registered the processor again after unregister"
        time.sleep(0.05)

    driven.call("register")
    driven.call("register")  # idempotent
    assert registry.get("migrant-1") is not None
    producer.router.invalidate()
    assert publish(producer, ["face_detection"]).targets == ("migrant-1",)


def test_publish_result_is_readable_by_frameflow_results(driven: DrivenProcessor, redis_url: str) -> None:
    result = {"frame_id": "cam-1-000042", "camera_id": "cam-1", "faces_detected": 1, "faces": [{"box": [1, 2, 3, 4]}]}
    entry_id = driven.call("publish_result", result)

    printed = frameflow(redis_url, "results", RESULT_STREAM, "--json", "--limit", "1")
    assert printed.exit_code == 0, printed.output
    line = json.loads(printed.output.strip().splitlines()[0])
    assert line["id"] == entry_id
    assert (line["frame_id"], line["camera_id"], line["processor_id"]) == ("cam-1-000042", "cam-1", "migrant-1")
    assert line["faces_detected"] == 1  # `results --json` gives numbers as numbers
    assert line["faces"] == [{"box": [1, 2, 3, 4]}]  # and nested results as objects
    assert line["timestamp"], "every result carries when it was published"


# -- in one process: the object's own answers ---------------------------------------------------------
def test_publish_result_refuses_what_cannot_be_encoded(redis_url: str, redis_client: redis.Redis) -> None:
    processor = RecordingProcessor("migrant-2", ["face_detection"], redis_url)

    async def refusals() -> list[str]:
        reasons = []
        for bad in ({"faces": 1}, {"frame_id": "f", "score": float("nan")}, {"frame_id": "f", "blob": {1, 2}}, [1]):
            with pytest.raises(ResultRefused) as refused:
                await processor.publish_result(bad)  # type: ignore[arg-type]
            reasons.append(str(refused.value))
        return reasons

    reasons = asyncio.run(refusals())
    assert "frame_id" in reasons[0]
    assert "'score'" in reasons[1] and "nan" in reasons[1]
    assert "'blob'" in reasons[2] and "JSON" in reasons[2]
    assert "dict" in reasons[3]
    assert redis_client.exists("results:migrant-2") == 0, "nothing refused is written"


def test_capacity_answers_are_true_to_the_frames_in_flight_and_the_bound_changes_live(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    processor = RecordingProcessor("migrant-3", ["face_detection"], redis_url, capacity=1)
    processor.gate.clear()
    with running(processor, redis_client):
        assert processor.id == "migrant-3"
        assert (processor.get_available_capacity(), processor.is_at_capacity()) == (1, False)
        for _ in range(3):
            publish(producer, ["face_detection"])
        wait_for(lambda: processor.calls == 1, what="the first frame to start")
        assert (processor.get_available_capacity(), processor.is_at_capacity()) == (0, True)
        metrics = processor.get_metrics()
        assert (metrics["capacity"], metrics["capacity_used"]) == (1, 1)

        loop = processor._loop
        assert loop is not None
        asyncio.run_coroutine_threadsafe(processor.update_configuration({"capacity": 3}), loop).result(10)

        wait_for(lambda: processor.calls == 3, what="the bound to grow to three frames at once")
        assert processor.stats.snapshot()["in_flight"] == 3
        assert (processor.get_available_capacity(), processor.is_at_capacity()) == (0, True)
        processor.gate.set()
        wait_for(lambda: processor.stats.processed == 3, what="the three frames to finish")
        assert (processor.get_available_capacity(), processor.is_at_capacity()) == (3, False)
        metrics = processor.get_metrics()

        asyncio.run_coroutine_threadsafe(processor.update_configuration({"capacity": 1}), loop).result(10)
        peaks: list[int] = []
        count_start = processor.stats.started

        def started() -> None:
            count_start()
            peaks.append(processor.stats.snapshot()["in_flight"])

        processor.stats.started = started  # type: ignore[method-assign]
        processor.gate.clear()
        for _ in range(3):
            publish(producer, ["face_detection"])
        wait_for(lambda: processor.calls == 4, what="a frame to start under the smaller bound")
        assert processor.is_at_capacity()
        processor.gate.set()
        wait_for(lambda: processor.stats.processed == 6, what="the frames to finish one at a time")
        assert max(peaks) == 1, f"frames in flight under capacity 1: {peaks}"
    assert metrics["processor_id"] == "migrant-3"
    assert (metrics["frames_processed"], metrics["errors_total"], metrics["capacity_used"]) == (3, 0, 0)
    assert metrics["uptime_seconds"] > 0
    assert metrics["processed"] == 3, "frameflow's own names stay beside the original's"


def test_update_configuration_refuses_unknown_settings_and_bad_values(redis_url: str) -> None:
    processor = RecordingProcessor("migrant-4", ["face_detection"], redis_url, capacity=2)
    for bad in ({"batch_size": 4}, {"capacity": 0}, {"capacity": "3"}, {"capabilities": []}):
        with pytest.raises(ConfigurationRefused):
            asyncio.run(processor.update_configuration(bad))
    assert (processor.capacity, processor.capabilities, processor._slots.size) == (2, ["face_detection"], 2)


def test_async_with_starts_registered_and_stops_gracefully(redis_url: str, redis_client: redis.Redis) -> None:
    processor = RecordingProcessor("migrant-5", ["face_detection"], redis_url)
    registry = ProcessorRegistry(redis_client)

    async def lifetime() -> bool:
        async with processor as entered:
            assert entered is processor
            return registry.get("migrant-5") is not None

    assert asyncio.run(lifetime()), "registered once `async with` entered"
    assert registry.get("migrant-5") is None, "unregistered once it left"
    assert processor._worker is None, "its worker stopped"


def test_health_answers_the_original_keys(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRAMEFLOW_HEALTH_HOST", raising=False)
    processor = RecordingProcessor("migrant-6", ["face_detection"], redis_url, health_port=0, capacity=3)
    with running(processor, redis_client):
        publish(producer, ["face_detection"])
        wait_for(lambda: processor.stats.processed == 1, what="one frame to be processed")
        assert processor._health is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{processor._health.port}/health", timeout=5) as response:
            body = json.loads(response.read())
    assert (body["frames_processed"], body["errors_total"], body["capacity_used"]) == (1, 0, 0)
    assert isinstance(body["uptime_seconds"], float) and body["uptime_seconds"] > 0
    assert body["processed"] == 1, "frameflow's own keys are still there"


def _results(client: redis.Redis) -> list[tuple[bytes, dict[str, str]]]:
    return [
        (entry_id, {name.decode(): value.decode() for name, value in fields.items()})
        for entry_id, fields in client.xrange(RESULT_STREAM)
    ]
