"""A :class:`~pipeline.processes.processor.ProcessorClient` run by Dramatiq's CLI (``dramatiq pipeline.broker x``).

There the worker exists before the processor starts: the processor module
calls :func:`serve_with_dramatiq` at import, and :class:`ProcessorLifecycle`
starts the processor (``start()``, model loading included) on an event-loop
thread once the worker has booted, and stops it before the worker shuts down.

A processor that cannot start (its weights missing, its registration refused)
takes its worker process down with it: Dramatiq's CLI only logs what a worker's
boot hooks raise, so the process would otherwise stay up, never registered, its
consumer holding frames no one will process. The lifecycle logs one ERROR line,
stops the worker (what it prefetched goes back to Redis, acks are written) and
exits with :data:`START_FAILED_EXIT_CODE`; Dramatiq's main process then stops its
other workers and exits with that code too, for compose or systemd to act on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Protocol

import dramatiq

from pipeline.streams.broker import RedisStreamsBroker

logger = logging.getLogger(__name__)

#: How long ``stop()`` lets in-flight frames finish.
STOP_TIMEOUT_S = 30.0

#: The exit code of a worker process whose processor could not start (Dramatiq's own run 0 to 4).
START_FAILED_EXIT_CODE = 5


class ManagedProcessor(Protocol):
    """What the lifecycle needs of a :class:`~pipeline.processes.processor.ProcessorClient` (which
    imports this module: the protocol keeps the import one-way)."""

    processor_id: str
    broker: RedisStreamsBroker | None
    _worker: dramatiq.Worker | None

    async def start(self) -> None: ...

    def stop(self) -> None: ...

    def ensure_allowed(self) -> None: ...

    def attach(self, broker: RedisStreamsBroker | None = None) -> RedisStreamsBroker: ...

    def _go_offline(self) -> None: ...


class ProcessorLifecycle(dramatiq.Middleware):
    """Starts and stops a processor attached to a worker run by Dramatiq's CLI; ends the
    worker process when the processor cannot start."""

    def __init__(self, processor: ManagedProcessor) -> None:
        self.processor = processor
        self._thread: threading.Thread | None = None
        self._worker: dramatiq.Worker | None = None
        self._shutting_down = False
        self._failed = False

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        processor = self.processor
        if processor._worker is not None:
            return  # started by ProcessorClient.start(), which manages itself
        processor._worker = self._worker = worker
        self._thread = threading.Thread(target=self._run, name=f"processor-{processor.processor_id}", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._thread is None or self._failed:
            return  # nothing started, or it failed and its thread is the one stopping the worker
        self._shutting_down = True
        self.processor.stop()
        self._thread.join(timeout=STOP_TIMEOUT_S)

    def _run(self) -> None:
        try:
            asyncio.run(self.processor.start())
        except BaseException as error:
            if self._shutting_down:
                logger.error("Processor %s failed while stopping: %s", self.processor.processor_id, _described(error))
                return
            self._failed = True
            self._end_process(error)

    def _end_process(self, error: BaseException) -> None:
        """Log why, stop the worker cleanly, and leave with :data:`START_FAILED_EXIT_CODE`.

        ``os._exit`` because this is not the main thread (which sleeps in Dramatiq's CLI until
        a signal): everything an exit would do is done first, then the process goes at once."""
        processor = self.processor
        logger.error(
            "Processor %s could not start: %s; stopping this worker process.",
            processor.processor_id,
            _described(error),
        )
        logger.debug("Why processor %s could not start:", processor.processor_id, exc_info=error)
        try:
            if self._worker is not None:
                self._worker.stop(timeout=int(STOP_TIMEOUT_S * 1000))  # prefetched frames go back to Redis
            processor._go_offline()  # deregister if it got that far, stop heartbeats and the health server
            if processor.broker is not None:
                processor.broker.close()
        except Exception as cleanup_error:
            logger.warning("Stopping worker of %s: %s", processor.processor_id, _described(cleanup_error))
        finally:
            logging.shutdown()  # flush every handler: Dramatiq's CLI reads our log lines from a pipe
            os._exit(START_FAILED_EXIT_CODE)


def _described(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def serve_with_dramatiq(processor: ManagedProcessor) -> bool:
    """Attach ``processor`` when this process is a Dramatiq worker on our broker.

    Call it at the bottom of a processor module: under
    ``dramatiq pipeline.broker workers.x`` the global broker is a
    :class:`RedisStreamsBroker` and the processor is attached to it; imported
    anywhere else (a test, ``python -m workers.x``) nothing happens.
    """
    from dramatiq.broker import global_broker

    if isinstance(global_broker, RedisStreamsBroker):
        quiet_scheduler_logs()
        processor.ensure_allowed()  # at import: Dramatiq's CLI logs and ignores what worker boot raises
        processor.attach(global_broker)
        return True
    return False


def quiet_scheduler_logs() -> None:
    """Dramatiq's CLI logs at INFO, and APScheduler logs two INFO lines for every heartbeat
    ("Running job", "executed successfully"): raise its level to WARNING, unless the
    application set one of its own (its warnings, a missed heartbeat, still show)."""
    scheduler_logger = logging.getLogger("apscheduler")
    if scheduler_logger.level == logging.NOTSET:
        scheduler_logger.setLevel(logging.WARNING)
