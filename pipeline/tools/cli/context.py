"""What every ``frameflow`` command shares: the Redis URL, one client, the namespace, ``--debug``."""

from __future__ import annotations

from typing import Any

import click
import redis

from pipeline.settings import Settings, mask_url
from pipeline.streams.broker import RedisStreamsBroker
from pipeline.streams.connection import connect, wait_until_reachable

#: The Redis the CLI talks to when neither ``--redis-url`` nor ``REDIS_URL``/``REDIS_HOST`` says:
#: where ``frameflow redis`` listens by default.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class CliContext:
    """What every command shares: the Redis URL, one client, the namespace, ``--debug``."""

    def __init__(self, *, debug: bool, redis_url: str | None, wait_for_redis_s: float) -> None:
        try:
            settings = Settings.from_env()
        except ValueError as error:  # a malformed variable: say which, in one line
            raise click.ClickException(str(error)) from None
        self.debug = debug
        self.configured_url = redis_url or settings.redis_url
        self.url = self.configured_url or DEFAULT_REDIS_URL
        self.namespace = settings.namespace
        self.wait_for_redis_s = wait_for_redis_s
        self._client: redis.Redis | None = None

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def client(self) -> redis.Redis:
        """A client of the configured Redis, once it answers (see ``--wait-for-redis``)."""
        if self._client is None:
            wait_until_reachable(self.url, self.wait_for_redis_s)
            self._client = connect(self.url)
        return self._client

    def broker(self, *middleware: Any) -> RedisStreamsBroker:
        return RedisStreamsBroker(client=self.client(), namespace=self.namespace, middleware=list(middleware))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
