"""One reader of Redis for every open page: the dashboard's cost does not grow with its tabs.

The poller reads the overview (:func:`~pipeline.dashboard.views.read_overview`) every interval in a
worker thread while at least one page listens, and hands each read to every listener. With no page
open it reads nothing. It keeps the charts' points of the last minutes, so a page opened late draws
its charts at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis

from .views import chart_point

logger = logging.getLogger(__name__)


class SharedPoller:
    """Parameters:
    read: one read of Redis (blocking; run in a thread), returning the overview.
    interval_s: seconds between two reads.
    history_points: how many chart points are kept.
    """

    def __init__(self, read: Callable[[], dict[str, Any]], interval_s: float, history_points: int) -> None:
        self.read = read
        self.interval_s = interval_s
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=history_points)
        self.latest: dict[str, Any] | None = None
        self.reads = 0
        self._listeners = 0
        self._changed: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def listeners(self) -> int:
        return self._listeners

    async def updates(self) -> AsyncIterator[dict[str, Any]]:
        """Each read from now on (the latest one first, when there is one), for as long as the caller
        iterates or until :meth:`close_soon`: one page's stream."""
        changed = self._condition()
        self._loop = asyncio.get_running_loop()
        self._listeners += 1
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run())
        try:
            seen = -1
            while not self._closed:
                async with changed:
                    while not self._closed and (self.latest is None or self.reads == seen):
                        await changed.wait()
                    if self._closed:
                        return
                    seen, latest = self.reads, self.latest
                assert latest is not None
                yield latest
        finally:
            self._listeners -= 1

    def close_soon(self) -> None:
        """End every stream (the server is stopping); safe to call from a signal handler."""
        self._closed = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.create_task, self._wake_all())

    async def _wake_all(self) -> None:
        changed = self._condition()
        async with changed:
            changed.notify_all()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _run(self) -> None:
        changed = self._condition()
        while self._listeners > 0 and not self._closed:
            try:
                overview = await asyncio.to_thread(self.read)
            except redis.RedisError as error:
                logger.warning("The dashboard cannot read Redis: %s", error)
                overview = {"error": f"cannot read Redis: {error}"}
            except Exception as error:  # a read that fails must not freeze every page: say it, go on
                logger.error("The dashboard's read of Redis failed: %r", error)
                overview = {"error": f"the dashboard's read failed: {error!r}"}
            else:
                self.history.append(chart_point(overview))
            async with changed:
                self.latest = overview
                self.reads += 1
                changed.notify_all()
            await asyncio.sleep(self.interval_s)  # the poll period
