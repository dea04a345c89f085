"""Redis clients that survive a Redis restart.

Every client frameflow creates retries connection errors with exponential
backoff (redis-py's own :class:`~redis.retry.Retry`), checks idle connections
before use, and keeps TCP alive, so a restarted or briefly unreachable Redis
costs a pause, not a crashed worker. ``rediss://`` and ``user:password@`` URLs
work as redis-py documents them.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .errors import RedisUnreachable
from .settings import mask_url

#: Errors worth retrying: the server went away or did not answer in time.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, ConnectionResetError)


def connect(url: str, **options: Any) -> redis.Redis:
    """A client for ``url`` with retries, health checks and keepalive."""
    options.setdefault("retry", Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=6))
    options.setdefault("retry_on_error", list(TRANSIENT_ERRORS))
    options.setdefault("health_check_interval", 15)
    options.setdefault("socket_connect_timeout", 5)
    if not url.startswith("unix://"):
        options.setdefault("socket_keepalive", True)
    return redis.Redis.from_url(url, **options)


def wait_until_reachable(url: str, timeout_s: float = 0.0) -> None:
    """Return once the Redis at ``url`` answers PING, trying for up to ``timeout_s`` seconds.

    Raises:
      RedisUnreachable: it did not answer in time, refused the credentials, or ``url`` is not
        a Redis URL; the message shows the URL with its password masked.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        except ValueError as error:
            raise RedisUnreachable(f"bad Redis URL {mask_url(url)}: {error}") from None
        try:
            client.ping()
            return
        except redis.AuthenticationError as error:
            if urlsplit(url).password is None:
                raise RedisUnreachable(
                    f"Redis at {mask_url(url)} requires a password: give it in the URL (redis://:PASSWORD@host:port/0)"
                ) from None
            raise RedisUnreachable(f"Redis at {mask_url(url)} refused the credentials: {error}") from None
        except TRANSIENT_ERRORS as error:
            if time.monotonic() >= deadline:
                raise RedisUnreachable(f"cannot reach Redis at {mask_url(url)}: {error}") from None
        finally:
            client.close()
        time.sleep(0.1)
