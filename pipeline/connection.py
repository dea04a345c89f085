"""Redis clients that survive a Redis restart.

Every client frameflow creates retries connection errors with exponential
backoff (redis-py's own :class:`~redis.retry.Retry`), checks idle connections
before use, and keeps TCP alive, so a restarted or briefly unreachable Redis
costs a pause, not a crashed worker. ``rediss://`` and ``user:password@`` URLs
work as redis-py documents them.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

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
