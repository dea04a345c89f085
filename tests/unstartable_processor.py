"""A processor that cannot start, run by Dramatiq's CLI in :mod:`tests.test_lifecycle`::

    dramatiq pipeline.broker tests.unstartable_processor -p 1 -t 1

Like a model processor, its ``start()`` loads a model first, and the load fails
(:class:`~pipeline.errors.WeightsMissing`), but only once the worker holds frames: one in
``process_frame`` (which returns when the worker shuts down) and others prefetched.
Every one of them must be processed or back in Redis when the worker process is gone.
"""

from __future__ import annotations

import asyncio
import threading

import dramatiq

from pipeline import ProcessorClient
from pipeline.errors import WeightsMissing
from pipeline.processes.processor import serve_with_dramatiq

PROCESSOR_ID = "unstartable-1"
RESULTS = "unstartable:results"
MISSING_WEIGHTS = "/nonexistent/unstartable.pt"
#: How long the model load waits for a frame to be held, and a held frame for the shutdown.
WAIT_S = 30.0


class UnstartableProcessor(ProcessorClient):
    def __init__(self) -> None:
        super().__init__(
            processor_id=PROCESSOR_ID,
            capabilities=["unstartable"],
            orchestrator_url="",
            capacity=1,
            result_stream=RESULTS,
            health_check_interval=0.5,
        )
        self.holding = threading.Event()  # a frame is in process_frame
        self.shutting_down = threading.Event()  # the worker began to shut down

    async def start(self) -> None:
        await asyncio.to_thread(self.load_model)
        await super().start()

    def load_model(self) -> None:
        self.holding.wait(WAIT_S)
        raise WeightsMissing(f"no weights at {MISSING_WEIGHTS}")

    def process_frame(self, frame_data: dict[bytes, bytes]) -> dict:
        self.holding.set()
        self.shutting_down.wait(WAIT_S)
        return {"echo": frame_data[b"frame_id"].decode()}


class ShutdownSignal(dramatiq.Middleware):
    """Tells the processor when its worker begins to shut down."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.event.set()


processor = UnstartableProcessor()
if serve_with_dramatiq(processor):
    assert processor.broker is not None
    processor.broker.add_middleware(ShutdownSignal(processor.shutting_down))
