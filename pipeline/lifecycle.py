"""A :class:`~pipeline.ProcessorClient` run by Dramatiq's CLI (``dramatiq pipeline.broker workers.x``).

There the worker exists before the processor starts: the processor module
calls :func:`serve_with_dramatiq` at import, and :class:`ProcessorLifecycle`
starts the processor (``start()``, model loading included) on an event-loop
thread once the worker has booted, and stops it before the worker shuts down.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import dramatiq

from .redis_streams import RedisStreamsBroker

if TYPE_CHECKING:
    from .processor import ProcessorClient

#: How long ``stop()`` lets in-flight frames finish.
STOP_TIMEOUT_S = 30.0


class ProcessorLifecycle(dramatiq.Middleware):
    """Starts and stops a processor attached to a worker run by Dramatiq's CLI."""

    def __init__(self, processor: ProcessorClient) -> None:
        self.processor = processor
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        processor = self.processor
        if processor._worker is not None:
            return  # started by ProcessorClient.start(), which manages itself
        processor._worker = worker
        self._thread = threading.Thread(
            target=asyncio.run, args=(processor.start(),), name=f"processor-{processor.processor_id}", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._thread is None:
            return
        self.processor.stop()
        self._thread.join(timeout=STOP_TIMEOUT_S)


def serve_with_dramatiq(processor: ProcessorClient) -> bool:
    """Attach ``processor`` when this process is a Dramatiq worker on our broker.

    Call it at the bottom of a processor module: under
    ``dramatiq pipeline.broker workers.x`` the global broker is a
    :class:`RedisStreamsBroker` and the processor is attached to it; imported
    anywhere else (a test, ``python -m workers.x``) nothing happens.
    """
    from dramatiq.broker import global_broker

    if isinstance(global_broker, RedisStreamsBroker):
        processor.ensure_allowed()  # at import: Dramatiq's CLI logs and ignores what worker boot raises
        processor.attach(global_broker)
        return True
    return False
