"""Metrics and health of every processor process, found the way Prometheus finds them.

One pipeline of real processes for the module: ``frameflow scheduler --metrics-port 0``, the
sample processor as two Dramatiq worker processes (``dramatiq pipeline.broker workers.sample -p 2``,
``HEALTH_PORT=0``) and as ``frameflow worker workers.sample --health-port 0``. Frames flow through
both; then the tests scrape the scheduler's ``/targets`` and every target's ``/metrics`` over HTTP,
and read the registry and ``frameflow processors``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pipeline import FrameProducer, ProcessorRegistry
from pipeline.domain.process_entries import ProcessEntries
from pipeline.domain.registry import ProcessorInfo
from pipeline.streams.connection import connect
from pipeline.version import __version__

from .cli_harness import FRAMEFLOW, frameflow_process, table_row
from .observability import Processes, observed_env
from .processes import WorkerProcess, parent_pid, pid_running, wait_until
from .test_metrics import Samples, scrape, value

#: Frames sent through the pipeline; every one must be counted exactly once, by one process.
FRAMES = 24

IMAGE = b"\x89PNG" + bytes(range(200))


@dataclasses.dataclass
class Pipeline:
    redis_url: str
    client: redis.Redis
    scheduler: WorkerProcess
    scheduler_url: str  # http://127.0.0.1:PORT
    dramatiq_cli: WorkerProcess  # two worker processes of processor "multi-1"
    single: WorkerProcess  # processor "single-1"
    routed: dict[str, int]  # frames routed to each processor

    def targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.scheduler_url}/targets", timeout=5) as response:
            return json.load(response)


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def processes_of(client: redis.Redis, processor_id: str) -> list[ProcessorInfo]:
    return ProcessEntries(client).of(processor_id)


def processed_by(samples: Samples, processor_id: str) -> float:
    labels = {"processor": processor_id, "queue": f"frames.ready.{processor_id}"}
    return value(samples, "frameflow_frames_processed_total", **labels) or 0


def wait_for_processes(client: redis.Redis, process: WorkerProcess, processor_id: str, count: int) -> None:
    wait_until(
        lambda: len(processes_of(client, processor_id)) == count or not process.alive(),
        60,
        lambda: f"{count} process(es) of {processor_id}:\n{process.log_tail()}",
    )
    assert process.alive(), process.log_tail()


@pytest.fixture(scope="module")
def pipeline(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    client = connect(redis_url)
    client.flushdb()
    group = Processes(tmp_path_factory.mktemp("processes"))
    env = observed_env(redis_url, HEALTH_CHECK_INTERVAL="1")
    try:
        scheduler = group.start("scheduler", [*FRAMEFLOW, "scheduler", "--metrics-port", "0", "--interval", "1"], env)
        dramatiq_cli = group.start(
            "dramatiq",
            [sys.executable, "-m", "dramatiq", "pipeline.broker", "workers.sample", "-p", "2", "-t", "2"],
            {**env, "PROCESSOR_ID": "multi-1", "HEALTH_PORT": "0"},
        )
        single = group.start(
            "single",
            [*FRAMEFLOW, "worker", "workers.sample", "--health-port", "0"],
            {**env, "PROCESSOR_ID": "single-1"},
        )
        wait_for_processes(client, dramatiq_cli, "multi-1", 2)
        wait_for_processes(client, single, "single-1", 1)
        found = wait_until(
            lambda: re.search(r"metrics at (http://\S+)/metrics", scheduler.log_path.read_text()),
            30,
            lambda: f"the scheduler's metrics address:\n{scheduler.log_tail()}",
        )
        producer = FrameProducer(redis_url)
        routed: dict[str, int] = {}
        for number in range(FRAMES):
            decision = producer.publish(
                camera_id="cam-1", image=IMAGE, capabilities=["sample"], width=8, height=8, metadata={"n": number}
            )
            for target in decision.targets:
                routed[target] = routed.get(target, 0) + 1
        producer.close()
        assert sum(routed.values()) == FRAMES and set(routed) == {"multi-1", "single-1"}, routed
        wait_until(
            lambda: client.xlen("samples:processed") == FRAMES,
            60,
            lambda: f"{FRAMES} results:\n{dramatiq_cli.log_tail()}\n{single.log_tail()}",
        )
        yield Pipeline(redis_url, client, scheduler, found.group(1), dramatiq_cli, single, routed)
    finally:
        group.stop_all()
        client.close()


def test_the_scheduler_targets_list_every_processor_process_with_its_pid(pipeline: Pipeline) -> None:
    targets = wait_until(lambda: len(found := pipeline.targets()) == 3 and found, 10, lambda: str(pipeline.targets()))
    by_pid = {int(group["labels"]["pid"]): group for group in targets}
    assert len(by_pid) == 3  # one endpoint per process, each with a port of its own
    assert len({target for group in targets for target in group["targets"]}) == 3
    multi = [pid for pid, group in by_pid.items() if group["labels"]["processor"] == "multi-1"]
    single = [pid for pid, group in by_pid.items() if group["labels"]["processor"] == "single-1"]
    assert single == [pipeline.single.pid]
    assert len(multi) == 2 and all(parent_pid(pid) == pipeline.dramatiq_cli.pid for pid in multi)  # its workers
    assert all(pid_running(pid) for pid in by_pid)


def test_each_target_serves_the_counters_of_its_own_process(pipeline: Pipeline) -> None:
    registry = ProcessorRegistry(pipeline.client)

    def agreed() -> dict[int, Samples] | None:
        """Each target's scrape, once each process's own entry and the processor entries caught up."""
        scraped = {}
        for group in pipeline.targets():
            (address,) = group["targets"]
            processor_id, pid = group["labels"]["processor"], int(group["labels"]["pid"])
            samples = scrape(f"http://{address}/metrics")
            (entry,) = [info for info in processes_of(pipeline.client, processor_id) if info.pid == pid]
            if processed_by(samples, processor_id) != entry.processed:
                return None
            scraped[pid] = samples
        totals = {info.processor_id: info.processed for info in registry.list()}
        return scraped if totals == pipeline.routed and len(scraped) == 3 else None

    scraped = wait_until(agreed, 20, "every target's counters, its process entry and the processor sums to agree")
    by_processor: dict[str, float] = {}
    for group in pipeline.targets():
        samples = scraped[int(group["labels"]["pid"])]
        processor_id = group["labels"]["processor"]
        by_processor[processor_id] = by_processor.get(processor_id, 0) + processed_by(samples, processor_id)
        assert value(samples, "frameflow_build_info", version=__version__) == 1
    assert by_processor == pipeline.routed  # every frame counted once, by the process that did it


def test_a_processor_run_as_two_processes_stays_one_routing_target(pipeline: Pipeline) -> None:
    processors = ProcessorRegistry(pipeline.client).list()
    assert sorted(info.processor_id for info in processors) == ["multi-1", "single-1"]
    multi = processes_of(pipeline.client, "multi-1")
    assert {info.queue_name for info in multi} == {"frames.ready.multi-1"}  # one queue for both
    assert len({info.pid for info in multi}) == 2 and all(info.health_endpoint for info in multi)


def test_frameflow_processors_shows_a_row_per_process(pipeline: Pipeline) -> None:
    def counted() -> list[ProcessorInfo] | None:
        found = processes_of(pipeline.client, "multi-1")
        return found if sum(info.processed for info in found) == pipeline.routed["multi-1"] else None

    multi = wait_until(counted, 20, "the processes' entries to count every frame")
    table = frameflow_process("--redis-url", pipeline.redis_url, "processors")
    listing = frameflow_process("--redis-url", pipeline.redis_url, "processors", "--json")
    assert table.returncode == 0, table.stderr
    assert table_row(table.stdout, "multi-1")[-1] == "2 processes"
    for info in multi:
        row = table_row(table.stdout, f"└ pid {info.pid}")
        assert row[-1] == f"{info.host}:{info.pid}" and row[5] == str(info.processed)
    assert "2 processes" not in table_row(table.stdout, "single-1")
    entries = {entry["processor_id"]: entry for entry in json.loads(listing.stdout)}
    processes = entries["multi-1"]["processes"]
    assert sorted(process["pid"] for process in processes) == sorted(info.pid for info in multi)
    assert all(process["health_endpoint"].endswith("/health") for process in processes)


def test_the_scheduler_serves_its_health_and_build_info(pipeline: Pipeline) -> None:
    status, health = wait_until(
        lambda: (
            (found := get_json(f"{pipeline.scheduler_url}/health"))[1].get("jobs_last_run", {}).get("emit_health")
            and found
        ),
        10,
        "the scheduler's first pass",
    )
    assert status == 200
    assert health["status"] == "healthy" and health["version"] == __version__ and health["redis_reachable"] is True
    assert set(health["jobs_last_run"]) == {
        "reap_dead",
        "release_parked",
        "trim_dead_letters",
        "remove_idle_consumers",
        "emit_health",
    }
    samples = scrape(f"{pipeline.scheduler_url}/metrics")
    assert value(samples, "frameflow_build_info", version=__version__) == 1


def test_a_health_port_that_is_taken_is_one_line(redis_url: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**observed_env(redis_url), "COLUMNS": "220"}
        result = subprocess.run(
            [*FRAMEFLOW, "--redis-url", redis_url, "worker", "workers.sample", "--health-port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert "Traceback" not in result.stderr, result.stderr
    expected = f"Error: cannot serve health on 127.0.0.1:{port}: Address already in use"
    assert (result.returncode, result.stderr.splitlines()) == (1, [expected])


def test_a_process_stopping_leaves_its_processor_registered_while_another_runs(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    namespace = "pair"  # apart from the module's pipeline; heartbeats too rare to re-register within the test
    env = observed_env(redis_url, FRAMEFLOW_NAMESPACE=namespace, PROCESSOR_ID="pair-1", HEALTH_CHECK_INTERVAL="30")
    client = connect(redis_url)
    registry, entries = ProcessorRegistry(client, namespace), ProcessEntries(client, namespace)
    group = Processes(tmp_path_factory.mktemp("pair"))
    try:
        first, second = (group.start(name, [*FRAMEFLOW, "worker", "workers.sample"], env) for name in ("a", "b"))
        wait_until(lambda: len(entries.of("pair-1")) == 2, 60, lambda: f"{first.log_tail()}\n{second.log_tail()}")
        assert first.stop() == 0
        assert registry.get("pair-1") is not None  # still routed to: a process of it runs
        assert [info.pid for info in entries.of("pair-1")] == [second.pid]
        assert second.stop() == 0
        assert registry.get("pair-1") is None and entries.of("pair-1") == []  # its last process took it out
    finally:
        group.stop_all()
        client.close()


def test_a_health_port_that_is_taken_is_one_line_for_a_seed_style_processor_too(redis_url: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = observed_env(redis_url, HEALTH_PORT=str(port), PROCESSOR_ID="seed-1")
        result = subprocess.run(
            [sys.executable, "-m", "workers.sample"], env=env, capture_output=True, text=True, timeout=60
        )
    assert "Traceback" not in result.stderr, result.stderr
    expected = f"seed-1: cannot serve health on 127.0.0.1:{port}: Address already in use"
    assert (result.returncode, result.stderr.splitlines()) == (1, [expected])
