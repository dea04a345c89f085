"""What every request handler of the dashboard shares: Redis, the namespace, the settings, the poller."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio.to_thread
import redis

from pipeline.streams.broker import RedisStreamsBroker

from .pictures import PictureCache
from .poller import SharedPoller
from .settings import DashboardSettings

T = TypeVar("T")


@dataclasses.dataclass
class DashboardContext:
    client: redis.Redis
    namespace: str
    settings: DashboardSettings
    poller: SharedPoller
    redis_url_masked: str
    pictures: PictureCache

    def broker(self, *middleware: Any) -> RedisStreamsBroker:
        """A broker on the dashboard's client (the scheduler's re-routing needs the router's)."""
        return RedisStreamsBroker(client=self.client, namespace=self.namespace, middleware=list(middleware))

    @functools.cached_property
    def plain_broker(self) -> RedisStreamsBroker:
        """One broker without middleware for the dead-letter views and actions."""
        return self.broker()

    def in_thread(self, function: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Run a blocking Redis call off the event loop (the pages keep streaming meanwhile)."""
        return anyio.to_thread.run_sync(function, *args)
