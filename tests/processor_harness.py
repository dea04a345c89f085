"""Helpers for the orchestrator tests: polling with a deadline, in-process processors.

Nothing here sleeps to synchronise: :func:`wait_for` polls a condition until a
deadline and fails with a message saying what never happened.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis

from pipeline import FrameProducer, ProcessorClient, ProcessorInfo, ProcessorRegistry
from pipeline.streams.keys import queue_keys
from tests.polling import wait_until

T = TypeVar("T")

#: A small JPEG-looking payload (only its bytes matter).
IMAGE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9"


def wait_for(condition: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """:func:`tests.polling.wait_until` with the keyword style these tests use."""
    return wait_until(condition, timeout, what or repr(condition), interval)


class RecordingProcessor(ProcessorClient):
    """A processor that remembers every frame it was given.

    ``gate`` (cleared) holds ``process_frame`` until it is set; ``failing`` (set)
    makes it raise. ``started`` is set whenever a frame begins processing.
    """

    max_retries = 0

    def __init__(self, processor_id: str, capabilities: list[str], redis_url: str, **options: Any) -> None:
        options.setdefault("health_check_interval", 0.5)
        options.setdefault("result_stream", f"results:{processor_id}")
        super().__init__(
            processor_id=processor_id,
            capabilities=capabilities,
            orchestrator_url="unused",
            redis_url=redis_url,
            **options,
        )
        self.frames: list[dict[bytes, bytes]] = []
        self.calls = 0
        self._frames_lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.failing = threading.Event()
        self.started = threading.Event()

    async def process_frame(self, frame_data: dict[bytes, bytes]) -> dict | None:
        with self._frames_lock:
            self.calls += 1
            self.frames.append(dict(frame_data))
        self.started.set()
        await asyncio.get_running_loop().run_in_executor(None, self.gate.wait, 30)
        if self.failing.is_set():
            raise RuntimeError(f"{self.processor_id} is failing on purpose")
        return {"image_bytes": len(base64.b64decode(frame_data[b"image_data"]))}

    def frame_ids(self) -> list[str]:
        with self._frames_lock:
            return [frame[b"frame_id"].decode() for frame in self.frames]


@contextlib.contextmanager
def running(processor: ProcessorClient, client: redis.Redis, *, timeout: float = 15.0) -> Iterator[ProcessorClient]:
    """Run ``processor.start()`` on its own event-loop thread until the block ends.

    Waits until the processor is registered (and, with ``health_port``, serving);
    on exit stops it and waits for ``start()`` to return.
    """
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(processor.start())
        except BaseException as error:  # surfaced by the test below
            failure.append(error)

    thread = threading.Thread(target=main, name=f"test-{processor.processor_id}", daemon=True)
    thread.start()
    registry = ProcessorRegistry(client)
    try:
        wait_for(
            lambda: failure or registry.get(processor.processor_id) is not None,
            timeout=timeout,
            what=f"{processor.processor_id} to register",
        )
        if failure:
            raise failure[0]
        yield processor
    finally:
        if isinstance(processor, RecordingProcessor):
            processor.gate.set()  # never leave a held frame blocking the shutdown
        processor.stop()
        thread.join(timeout=timeout)
        assert not thread.is_alive(), f"{processor.processor_id} did not stop within {timeout}s"
    if failure:
        raise failure[0]


def register_fake(
    client: redis.Redis, processor_id: str, capabilities: tuple[str, ...], **changes: Any
) -> ProcessorInfo:
    """A registry entry with no worker behind it: its queue only fills, so tests can inspect it."""
    values: dict[str, Any] = {
        "processor_id": processor_id,
        "capabilities": capabilities,
        "capacity": 10,
        "queue_name": f"frames.ready.{processor_id}",
        "actor_name": f"process_frame.{processor_id}",
        "queue_bound": 0,
    }
    values.update(changes)
    info = ProcessorInfo(**values)
    ProcessorRegistry(client).register(info, ttl_s=60)
    return info


def queue_entries(client: redis.Redis, processor_id: str) -> list[dict[bytes, bytes]]:
    """The entries waiting on a processor's queue, oldest first."""
    stream = queue_keys("frameflow", f"frames.ready.{processor_id}").stream
    return [fields for _, fields in client.xrange(stream)]


def queued_frame_ids(client: redis.Redis, processor_id: str) -> list[str]:
    """The frame ids waiting on a processor's queue, oldest first."""
    return [entry[b"frame_id"].decode() for entry in queue_entries(client, processor_id)]


def drops(client: redis.Redis, processor_id: str) -> dict[str, int]:
    """The drops hash of a processor's queue (``frameflow:drops:{frames:ready:<id>}``)."""
    raw = client.hgetall(f"frameflow:drops:{{frames:ready:{processor_id}}}")
    return {name.decode(): int(value) for name, value in raw.items()}


def publish(producer: FrameProducer, capabilities: list[str], *, camera_id: str = "cam-1", **options: Any) -> Any:
    options.setdefault("image", IMAGE)
    return producer.publish(camera_id=camera_id, capabilities=capabilities, width=640, height=480, **options)
