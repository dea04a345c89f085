"""A new user's first hour with ``frameflow`` (issue 14): a processor module in the current folder,
one-line errors for the usual mistakes, a warning for a capability nobody offers, JSON a program can
read, tables that survive a pipe and quiet heartbeats under Dramatiq's CLI (the Makefile's part:
tests/test_install.py). Every command runs as a real process against a real Redis."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.domain.registry import ProcessorInfo, ProcessorRegistry
from pipeline.domain.results import result_fields
from tests.cli_harness import FRAMEFLOW, ROOT, frameflow_process, table_row
from tests.polling import wait_until
from tests.processes import WorkerProcess, worker_env

#: What a person sees when a command fails the way it should: one line on stderr, exit code 1.
ONE_LINE_EXIT = 1


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a ``frameflow`` process: this checkout importable, no Redis or frameflow settings."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("REDIS_", "FRAMEFLOW_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def assert_one_line(result: subprocess.CompletedProcess, expected: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert (result.returncode, result.stderr.splitlines()) == (ONE_LINE_EXIT, [f"Error: {expected}"])


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that this test holds open (listening), so nothing else can bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


# -- frameflow worker mysvc ------------------------------------------------------------------
def test_worker_imports_a_processor_module_from_the_current_folder(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # As the `frameflow` console script runs: Python puts the script's folder on the path, not the current one.
    launcher = tmp_path / "bin" / "frameflow"
    launcher.parent.mkdir()
    launcher.write_text("import sys\nfrom pipeline.tools.cli import main\nsys.exit(main())\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "mysvc.py").write_text("from workers.sample import build\n\nprocessor = build()\n")
    process = subprocess.Popen(
        [sys.executable, str(launcher), "--redis-url", redis_url, "worker", "mysvc"],
        cwd=project,
        env=child_env(PROCESSOR_ID="mysvc-1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    registry = ProcessorRegistry(redis_client)
    try:
        wait_until(
            lambda: registry.get("mysvc-1") or process.poll() is not None,
            30,
            "mysvc-1 to register or the worker to end",
        )
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert "processor mysvc-1 (sample)" in output and "processor mysvc-1 stopped" in output


# -- one line instead of a traceback ---------------------------------------------------------
def test_redis_with_a_missing_data_folder_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    result = frameflow_process("redis", "--port", "0", "--dir", str(missing), env=child_env())
    assert_one_line(result, f"the data folder {missing} does not exist: create it first")


def test_scheduler_metrics_on_a_taken_port_is_one_line(redis_url: str, redis_client: redis.Redis, taken_port) -> None:
    result = frameflow_process(
        "--redis-url", redis_url, "scheduler", "--metrics-port", str(taken_port), env=child_env()
    )
    assert_one_line(result, f"cannot serve metrics on port {taken_port}: Address already in use")


def test_a_malformed_processor_capacity_is_one_line_naming_it(redis_url: str, redis_client: redis.Redis) -> None:
    result = frameflow_process(
        "--redis-url", redis_url, "worker", "workers.sample", env=child_env(PROCESSOR_CAPACITY="abc")
    )
    assert_one_line(result, "PROCESSOR_CAPACITY='abc' is not an integer")


def test_an_unreadable_image_names_its_path_and_the_reason(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    image = tmp_path / "broken.jpg"
    image.write_text("not a picture")
    result = frameflow_process(
        "--redis-url", redis_url, "enqueue", "--source", str(image), "--capability", "x", env=child_env()
    )
    assert result.returncode == ONE_LINE_EXIT and "Traceback" not in result.stderr, result.stderr
    # Read when its turn comes (after the capability warning and the progress line).
    assert result.stderr.splitlines()[-1] == f"Error: cannot read image {image}: not an image Pillow can decode"


def test_a_text_file_source_is_not_an_image_or_video(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("camera notes\n" * 50)
    result = frameflow_process(
        "--redis-url", redis_url, "enqueue", "--source", str(notes), "--capability", "x", env=child_env()
    )
    assert result.returncode == ONE_LINE_EXIT and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: cannot read {notes}: not an image or video ("), line


def test_a_bad_url_scheme_lists_every_supported_scheme() -> None:
    result = frameflow_process("--redis-url", "http://127.0.0.1:1/0", "processors", env=child_env())
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == ONE_LINE_EXIT
    (line,) = result.stderr.splitlines()
    for scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel"):
        assert f" {scheme}://" in line, line


# -- enqueue to a capability nobody offers ----------------------------------------------------
def register(redis_client: redis.Redis, processor_id: str, capabilities: tuple[str, ...]) -> None:
    info = ProcessorInfo(
        processor_id=processor_id,
        capabilities=capabilities,
        capacity=4,
        queue_name=f"frames.ready.{processor_id}",
        actor_name="process_frame",
    )
    ProcessorRegistry(redis_client).register(info, ttl_s=60)


def test_enqueue_warns_about_a_capability_no_processor_ever_offered(redis_url: str, redis_client: redis.Redis) -> None:
    register(redis_client, "sample-1", ("sample",))
    ProcessorRegistry(redis_client).deregister("sample-1")  # offered once: still known
    register(redis_client, "faces-1", ("faces",))
    args = ("--redis-url", redis_url, "enqueue", "--count", "2", "--rate", "100")

    typo = frameflow_process(*args, "--capability", "nosuchcap", env=child_env())
    known = frameflow_process(*args, "--capability", "sample", env=child_env())
    strict = frameflow_process(*args, "--capability", "nosuchcap", "--strict", env=child_env())

    expected = "no processor has ever offered 'nosuchcap' (capabilities offered so far: faces, sample)"
    assert typo.returncode == 0, typo.stderr
    assert f"warning: {expected}; its frames will be parked until a processor offers it" in typo.stderr
    assert "sent 2 frame(s)" in typo.stdout
    assert known.returncode == 0 and "warning" not in known.stderr, known.stderr
    assert_one_line(strict, expected)


# -- results --json, tables in a pipe ---------------------------------------------------------
def test_results_json_gives_typed_values_and_nothing_else_on_stdout(redis_url: str, redis_client: redis.Redis) -> None:
    result = {"count": 3, "score": 0.75, "found": True, "label": "cat", "boxes": [{"x": 1, "y": 2}], "extra": None}
    frame = {"frame_id": "0001", "camera_id": "42", "timestamp": "2024-05-01T10:00:00+00:00"}
    redis_client.xadd("results:typed", result_fields(result, frame, processor_id="p-1", latency_ms=12.5))

    printed = frameflow_process("--redis-url", redis_url, "results", "results:typed", "--json", env=child_env())

    assert printed.returncode == 0, printed.stderr
    (line,) = printed.stdout.splitlines()
    record = json.loads(line)
    assert {name: record[name] for name in result} == result
    assert (record["frame_id"], record["camera_id"], record["processor_id"]) == ("0001", "42", "p-1")
    assert record["latency_ms"] == 12.5 and isinstance(record["trace_context"], dict)


def test_tables_keep_their_columns_when_piped(redis_url: str, redis_client: redis.Redis) -> None:
    register(redis_client, "a-processor-with-a-rather-long-name-1", ("faces", "objects", "gestures"))
    env = {name: value for name, value in child_env().items() if name != "COLUMNS"}
    printed = subprocess.run(
        [*FRAMEFLOW, "--redis-url", redis_url, "processors"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 0, printed.stderr
    cells = table_row(printed.stdout, "a-processor-with-a-rather-long-name-1")
    assert cells[1:5] == ["faces, objects, gestures", "4", "live", "0"], printed.stdout
    assert cells[-1].endswith(f":{os.getpid()}"), printed.stdout


# -- quiet heartbeats under Dramatiq's CLI ----------------------------------------------------
def test_scheduler_logs_no_line_per_heartbeat_under_dramatiq_cli(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = worker_env(redis_url, lease_ms=10_000, max_deliveries=3, PROCESSOR_ID="quiet-1", HEALTH_CHECK_INTERVAL="0.2")
    cli = WorkerProcess(
        [sys.executable, "-m", "dramatiq", "pipeline.broker", "workers.sample", "-p", "1", "-t", "1"],
        env,
        tmp_path / "cli.log",
    )
    registry = ProcessorRegistry(redis_client)
    beats: set[float] = set()

    def five_heartbeats() -> bool:
        info = registry.get("quiet-1")
        if info is not None:
            beats.add(info.heartbeat_at)
        return len(beats) >= 5

    try:
        wait_until(five_heartbeats, 60, lambda: f"five heartbeats of quiet-1:\n{cli.log_tail()}")
    finally:
        cli.stop()
    log = cli.log_path.read_text(errors="replace")
    assert "apscheduler" not in log, log
