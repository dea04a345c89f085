"""A processor that cannot start under Dramatiq's CLI ends its worker process, and the CLI exits non-zero.

Real ``dramatiq pipeline.broker MODULE`` processes on a real Redis: the worker process logs
one ERROR line naming the processor and the error, gives back the frames it held (the lease
is a minute long, so a frame left to lapse would still be pending) and exits with
``START_FAILED_EXIT_CODE``; Dramatiq's main process then exits with that code too.
"""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

import redis

from pipeline import ProcessorRegistry
from pipeline.processes.lifecycle import START_FAILED_EXIT_CODE
from pipeline.streams.keys import queue_keys
from tests import unstartable_processor as unstartable
from tests.hostile import frame_entry, result_frame_ids, valid_frame
from tests.polling import wait_until
from tests.processes import WorkerProcess, pending_count, worker_env

#: Long enough that a frame the dead worker held stays pending through the test.
LEASE_MS = 60_000


def dramatiq_cli(module: str, env: dict[str, str], log_path: Path) -> WorkerProcess:
    command = [sys.executable, "-m", "dramatiq", "pipeline.broker", module, "-p", "1", "-t", "1"]
    return WorkerProcess(command, env, log_path)


def exit_code_within(cli: WorkerProcess, timeout_s: float) -> int:
    try:
        wait_until(lambda: not cli.alive(), timeout_s, lambda: f"the Dramatiq CLI to exit:\n{cli.log_tail()}")
    finally:
        cli.stop()
    return cli.process.returncode


def start_failures(cli: WorkerProcess) -> list[str]:
    return [line for line in cli.log_path.read_text(errors="replace").splitlines() if "could not start" in line]


def test_a_processor_that_cannot_start_ends_its_worker_and_gives_its_frames_back(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    keys = queue_keys("frameflow", f"frames.ready.{unstartable.PROCESSOR_ID}")
    frame_ids = {uuid.uuid4().hex for _ in range(10)}
    for frame_id in frame_ids:
        redis_client.xadd(keys.stream, frame_entry(valid_frame(frame_id), unstartable.PROCESSOR_ID))
    # Up to 8 frames prefetched: one held in process_frame while the model load fails, the rest waiting.
    env = worker_env(redis_url, lease_ms=LEASE_MS, max_deliveries=5, dramatiq_queue_prefetch="8")
    cli = dramatiq_cli("tests.unstartable_processor", env, tmp_path / "cli.log")

    assert exit_code_within(cli, 60) == START_FAILED_EXIT_CODE, cli.log_tail()
    (line,) = start_failures(cli)
    assert re.search(
        r"\[ERROR\] Processor unstartable-1 could not start: WeightsMissing: no weights at "
        r"/nonexistent/unstartable\.pt; stopping this worker process\.$",
        line,
    ), line

    processed = result_frame_ids(redis_client, unstartable.RESULTS)
    back = {fields[b"frame_id"].decode() for _, fields in redis_client.xrange(keys.stream)}
    assert pending_count(redis_client, keys.stream) == 0  # nothing held by the dead worker
    assert processed | back == frame_ids and not processed & back, (processed, back)
    assert processed and back  # one frame finished before the worker stopped; those it had prefetched went back
    assert ProcessorRegistry(redis_client).get(unstartable.PROCESSOR_ID) is None


def test_a_model_worker_without_its_weights_exits_non_zero(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pt"
    env = worker_env(redis_url, lease_ms=LEASE_MS, max_deliveries=5, FRAMEFLOW_OBJECT_WEIGHTS=str(missing))
    cli = dramatiq_cli("workers.object_detection", env, tmp_path / "cli.log")

    assert exit_code_within(cli, 90) == START_FAILED_EXIT_CODE, cli.log_tail()
    (line,) = start_failures(cli)
    assert re.search(
        rf"\[ERROR\] Processor object-detection-1 could not start: WeightsMissing: FRAMEFLOW_OBJECT_WEIGHTS names "
        rf"{re.escape(str(missing))}, which is not a file; stopping this worker process\.$",
        line,
    ), line
    assert ProcessorRegistry(redis_client).get("object-detection-1") is None
