"""A processor started before its Redis waits for it, and a stop during that wait ends it at once.

Compose, systemd and a Procfile start a processor and its Redis together, so the processor
may come first. Like a Dramatiq or Celery worker retrying its broker, ``start()`` waits: one
WARNING line per try with the URL masked and the next pause (0.1 s doubling to 5 s), for
``FRAMEFLOW_WAIT_FOR_REDIS`` seconds, or for as long as it takes when that is 0 (the default).
When the wait is spent the process ends with one line and exit code 1 (:class:`SystemExit`),
which is what the seed's ``asyncio.run(processor.start())`` needs to end without a traceback.

The tries run on a daemon thread (:func:`~pipeline.streams.connection.wait_until_reachable`)
while the event loop waits for whichever comes first: Redis answering, the wait being spent,
or ``stop()``. A stop does not wait for the try under way (sentinels that accept a connection
and never answer hold one for seconds): the thread is told to stop, and left to end by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from pipeline.domain import log_context
from pipeline.errors import RedisUnreachable
from pipeline.streams.connection import wait_until_reachable


async def wait_for_redis(processor_id: str, url: str, wait_s: float, stop_requested: asyncio.Event) -> bool:
    """``True`` once the Redis at ``url`` answers; ``False`` when ``stop_requested`` is set first.

    ``wait_s`` is ``FRAMEFLOW_WAIT_FOR_REDIS``: seconds to wait at most, 0 for no limit.

    Raises:
      SystemExit: the wait is spent, or Redis refused the credentials; its one line names the
        processor and the masked URL, and its ``__cause__`` is the :class:`RedisUnreachable`.
    """
    log_context.install()  # the wait's lines take FRAMEFLOW_LOG_FORMAT, as the worker's will
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[bool] = loop.create_future()
    stopping = threading.Event()

    def wait() -> None:
        try:
            answered: bool | BaseException = wait_until_reachable(url, wait_s or None, stopping)
        except BaseException as error:  # handed to the loop, which raises it in start()
            answered = error
        with contextlib.suppress(RuntimeError):  # the loop is closed: start() returned on stop()
            loop.call_soon_threadsafe(_settle, outcome, answered)

    threading.Thread(target=wait, name=f"wait-for-redis-{processor_id}", daemon=True).start()
    stopped = asyncio.ensure_future(stop_requested.wait())
    try:
        await asyncio.wait({outcome, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.set()
        stopped.cancel()
        outcome.cancel()  # no effect once settled; else the thread's late answer is dropped
    if stop_requested.is_set() or outcome.cancelled():
        if not outcome.cancelled():
            outcome.exception()  # retrieved, so asyncio does not log it: the stop makes it moot
        return False
    try:
        return outcome.result()
    except RedisUnreachable as error:
        raise SystemExit(f"{processor_id}: {error}") from error


def _settle(outcome: asyncio.Future[bool], answered: bool | BaseException) -> None:
    if outcome.done():
        return
    if isinstance(answered, BaseException):
        outcome.set_exception(answered)
    else:
        outcome.set_result(answered)
