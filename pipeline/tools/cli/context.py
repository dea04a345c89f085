"""What every ``frameflow`` command shares: the Redis URL, one client, the namespace, ``--debug``."""

from __future__ import annotations

from typing import Any

import click
import redis

from pipeline.settings import Settings, mask_url
from pipeline.streams.broker import RedisStreamsBroker
from pipeline.streams.connection import connect, wait_until_reachable
from pipeline.streams.shared_redis import LOCAL_REDIS_URL, DefaultRedis, default_redis

#: What the CLI uses when neither ``--redis-url`` nor ``REDIS_URL``/``REDIS_HOST`` says, in its help.
DEFAULT_REDIS_DESCRIPTION = "localhost:6379 when it answers, else the shared embedded Redis"


class CliContext:
    """What every command shares: the Redis URL, one client, the namespace, ``--debug``.

    Without a configured URL, the Redis is chosen when a command first needs it
    (:func:`~pipeline.streams.shared_redis.default_redis`) and released on :meth:`close`.
    """

    def __init__(self, *, debug: bool, redis_url: str | None, wait_for_redis_s: float) -> None:
        try:
            self.settings = Settings.from_env()
        except ValueError as error:  # a malformed variable: say which, in one line
            raise click.ClickException(str(error)) from None
        self.debug = debug
        self.configured_url = redis_url or self.settings.redis_url
        self.namespace = self.settings.namespace
        self.wait_for_redis_s = wait_for_redis_s
        self._default: DefaultRedis | None = None
        self._client: redis.Redis | None = None

    @property
    def url(self) -> str:
        """The Redis the commands use (chosen now when nothing configured one)."""
        if self.configured_url:
            return self.configured_url
        if self._default is None:
            self._default = default_redis(self.settings)
        return self._default.url

    @property
    def known_url(self) -> str:
        """The URL for messages, without choosing one: what was configured or chosen, else the local default."""
        return self.configured_url or (self._default.url if self._default is not None else LOCAL_REDIS_URL)

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
        if self._default is not None:
            self._default.release()
