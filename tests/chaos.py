"""Helpers for the fault tests (``tests/test_chaos.py``): real processes, a steady camera, and the ledger.

The processes are the suite's own: :mod:`tests.echo_processor` (one processor per
process, the seed's way) and ``frameflow scheduler``, started as
:class:`tests.processes.WorkerProcess` children in sessions of their own, so a test
can SIGKILL or SIGTERM exactly one of them.

Every fault test ends with a :class:`FaultFigures`: what ``publish`` accepted, what
the result stream says was processed (and how often), what Redis counted as dropped
with its reason, and what is lost (accepted, never processed, never counted as
dropped: it must be 0). With ``FRAMEFLOW_FAULT_REPORT`` naming a file, each test
appends its figures there as one JSON line; ``scripts/fault_table.py`` renders them
as the README's table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from pipeline import FrameProducer, NotReplicated, ProcessorRegistry
from tests.polling import wait_until
from tests.processes import WorkerProcess, worker_env

#: The capability every echo processor of these tests offers, and where their results go.
CAPABILITY = "chaos"
RESULT_STREAM = "echo:results"

#: How long a Python child may take to boot and register on this loaded machine.
BOOT_S = 30

#: Heartbeat period of the echo processors (their registry entry lives three of them).
HEARTBEAT_S = 0.5


# -- the ledger --------------------------------------------------------------------------------
@dataclasses.dataclass
class FaultFigures:
    """The outcome of one fault: every accepted frame is processed or dropped with a reason."""

    fault: str
    accepted: int
    processed: int
    duplicated: int
    dropped: dict[str, int]
    lost: int
    refused: int = 0  #: publishes that raised (Redis away): never accepted, so never owed
    #: durable publishes that raised ``NotReplicated`` (no replica confirmed them): the caller knows, never owed
    not_replicated: int = 0
    #: accepted frames a failover's promoted replica never received (asynchronous replication's loss)
    unreplicated: int = 0

    def record(self) -> None:
        """Append this as one JSON line to ``FRAMEFLOW_FAULT_REPORT``, when it names a file."""
        path = os.environ.get("FRAMEFLOW_FAULT_REPORT")
        if path:
            with open(path, "a", encoding="utf-8") as report:
                report.write(json.dumps(dataclasses.asdict(self), sort_keys=True) + "\n")


def results_per_frame(client: redis.Redis, stream: str = RESULT_STREAM) -> Counter[str]:
    """How many results each frame id has on a result stream (every result names its ``frame_id``)."""
    return Counter(fields[b"frame_id"].decode() for _, fields in client.xrange(stream))


def drop_counts(client: redis.Redis, namespace: str = "frameflow") -> dict[str, int]:
    """Every drop Redis counted, by reason, summed over all queues (``<ns>:drops:*`` hashes)."""
    totals: Counter[str] = Counter()
    for key in client.scan_iter(match=f"{namespace}:drops:*"):
        for reason, count in client.hgetall(key).items():
            totals[reason.decode()] += int(count)
    return {reason: count for reason, count in sorted(totals.items()) if count}


def account(
    fault: str,
    accepted: Iterable[str],
    client: redis.Redis,
    *,
    refused: int = 0,
    not_replicated: int = 0,
    stream: str = RESULT_STREAM,
) -> FaultFigures:
    """The figures of ``fault`` from the accepted frame ids and what Redis holds now."""
    accepted = set(accepted)
    results = results_per_frame(client, stream)
    processed = {frame_id for frame_id in accepted if results[frame_id]}
    dropped = drop_counts(client)
    return FaultFigures(
        fault=fault,
        accepted=len(accepted),
        processed=len(processed),
        duplicated=sum(results[frame_id] - 1 for frame_id in processed),
        dropped=dropped,
        lost=max(0, len(accepted) - len(processed) - sum(dropped.values())),
        refused=refused,
        not_replicated=not_replicated,
    )


def whereabouts(client: redis.Redis, namespace: str = "frameflow") -> dict[str, int]:
    """The length of every frame queue and parked stream: where unprocessed frames wait."""
    keys = [*client.scan_iter(match="frames:ready:*"), *client.scan_iter(match=f"{namespace}:parked:*")]
    return {key.decode(): int(client.xlen(key)) for key in sorted(keys)}


def unprocessed(accepted: Iterable[str], client: redis.Redis) -> set[str]:
    results = results_per_frame(client)
    return {frame_id for frame_id in accepted if not results[frame_id]}


# -- processes -----------------------------------------------------------------------------------
class Fleet:
    """Starts the test's processes (echo processors, schedulers) and always stops them."""

    def __init__(self, redis_url: str, log_dir: Path, *, lease_ms: int, max_deliveries: int = 10) -> None:
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.lease_ms = lease_ms
        self.max_deliveries = max_deliveries
        self.started: list[WorkerProcess] = []

    def spawn(self, command: list[str], name: str, **env: str) -> WorkerProcess:
        environment = worker_env(self.redis_url, lease_ms=self.lease_ms, max_deliveries=self.max_deliveries, **env)
        process = WorkerProcess(command, environment, self.log_dir / f"{name}-{len(self.started)}.log")
        self.started.append(process)
        return process

    def echo(self, processor_id: str, *, delay_s: float = 0.01, capacity: int = 2, **env: str) -> WorkerProcess:
        """``python -m tests.echo_processor`` with an unbounded queue: nothing is dropped to make room."""
        return self.spawn(
            [sys.executable, "-m", "tests.echo_processor", processor_id, CAPABILITY],
            processor_id,
            ECHO_DELAY_S=str(delay_s),
            ECHO_CAPACITY=str(capacity),
            ECHO_QUEUE_BOUND="0",
            **env,
        )

    def scheduler(self, interval_s: float = 0.2) -> WorkerProcess:
        """``frameflow scheduler`` as the Procfile runs it."""
        frameflow = str(Path(sys.executable).with_name("frameflow"))
        return self.spawn(
            [frameflow, "--wait-for-redis", "30", "scheduler", "--interval", str(interval_s)], "scheduler"
        )

    def stop_all(self) -> None:
        for process in self.started:
            process.terminate()  # all at once: each takes a moment to shut down
        for process in self.started:
            code = process.stop(timeout=10)
            print(f"--- {process!r} ended with {code}; its log ends with:\n{process.log_tail(15)}")


def wait_registered(client: redis.Redis, processor_id: str, process: WorkerProcess) -> None:
    """Wait until ``process`` (not an earlier one with the same id) is the registered ``processor_id``."""
    registry = ProcessorRegistry(client)

    def registered() -> bool:
        assert process.alive(), f"{process!r} died while booting:\n{process.log_tail()}"
        info = registry.get(processor_id)
        return info is not None and info.pid == process.pid

    wait_until(registered, BOOT_S, f"{processor_id} (pid {process.pid}) to register")


# -- a camera ------------------------------------------------------------------------------------
class Camera(threading.Thread):
    """Publishes up to ``frames`` frames for :data:`CAPABILITY`, ``interval_s`` apart, on its
    own thread, until :meth:`finish`.

    A frame is *accepted* when ``publish`` returned: routed to a processor, or parked
    until one registers (Redis holds it either way, so it is owed). A publish that
    raised (Redis away) is *refused* and counted, never retried: the camera moves on to
    its next frame, as a live camera does. A durable publish (``durability="replicated"``)
    that raised :class:`~pipeline.NotReplicated` is counted apart, as *not replicated*: it is
    on the primary only and its caller was told so; it is not owed either.
    """

    def __init__(
        self,
        redis_url: str,
        frames: int,
        *,
        interval_s: float = 0.01,
        image: bytes = b"\xff\xd8chaos\xff\xd9",
        **producer_options: Any,
    ) -> None:
        super().__init__(name="chaos-camera", daemon=True)
        self.image = image
        # Nothing goes stale in these tests; ``producer_options`` reach FrameProducer (durability, ...).
        self.producer = FrameProducer(redis_url, max_age_ms=600_000, **producer_options)
        self.frames = frames
        self.interval_s = interval_s
        self.accepted: list[str] = []
        self.parked: list[str] = []
        self.refused: list[str] = []
        self.not_replicated = 0
        self.done = threading.Event()
        self._stopping = threading.Event()

    def publish_one(self) -> None:
        try:
            decision = self.producer.publish(
                camera_id="cam-chaos", image=self.image, capabilities=[CAPABILITY], width=4, height=4
            )
        except NotReplicated:
            self.not_replicated += 1
            return
        except redis.RedisError as error:
            self.refused.append(type(error).__name__)
            return
        (self.accepted if decision.targets else self.parked).append(decision.frame_id)

    def run(self) -> None:
        try:
            for _ in range(self.frames):
                if self._stopping.is_set():
                    break
                self.publish_one()
                self._stopping.wait(self.interval_s)
        finally:
            self.done.set()

    def sent(self) -> int:
        return len(self.accepted) + len(self.parked) + len(self.refused) + self.not_replicated

    def owed(self) -> list[str]:
        """The frames ``publish`` accepted: every one must be processed (or dropped with a reason)."""
        return self.accepted + self.parked

    def finish(self, timeout: float = 60) -> None:
        """Stop publishing and wait for the thread."""
        self._stopping.set()
        self.join(timeout)
        assert not self.is_alive(), "the camera did not finish"
        self.producer.close()
