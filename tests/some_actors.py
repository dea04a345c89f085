"""Actors that the multi-process tests run in real worker processes.

Import this only where ``pipeline.broker`` (or another broker) is already the
global Dramatiq broker: the worker processes of ``tests/test_broker_processes.py``
and ``dramatiq pipeline.broker tests.some_actors``. The test process sends to
these actors by name and never imports them.

Every actor writes what it did to Redis through the worker's own broker client
(which retries across a Redis restart), under keys derived from its ``key``
argument, so the test can count executions and see which process ran them.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import dramatiq
import redis


def _redis() -> redis.Redis:
    return dramatiq.get_broker().client  # type: ignore[attr-defined]


@dramatiq.actor(max_retries=0)
def record(key: str, value: int | str, work_ms: int = 0) -> None:
    """Work for ``work_ms``, then add ``value`` to the set ``{key}:values``,
    count the execution in ``{key}:count`` and the pid in the set ``{key}:pids``."""
    if work_ms:
        time.sleep(work_ms / 1000)
    pipe = _redis().pipeline(transaction=False)
    pipe.sadd(f"{key}:values", value)
    pipe.incr(f"{key}:count")
    pipe.sadd(f"{key}:pids", os.getpid())
    pipe.execute()


@dramatiq.actor(max_retries=0)
def hang_first_time(key: str) -> None:
    """Append the pid to ``{key}:attempts``; the first attempt then hangs (until the
    test SIGKILLs its process), later ones append the pid to ``{key}:done``."""
    client = _redis()
    if client.rpush(f"{key}:attempts", os.getpid()) == 1:
        threading.Event().wait(300)
        return
    client.rpush(f"{key}:done", os.getpid())


@dramatiq.actor(max_retries=0)
def long_task(key: str, seconds: float) -> None:
    """Append the pid to ``{key}:runs``, work for ``seconds``, append the pid to ``{key}:done``."""
    client = _redis()
    client.rpush(f"{key}:runs", os.getpid())
    time.sleep(seconds)
    client.rpush(f"{key}:done", os.getpid())


@dramatiq.actor(max_retries=0)
def die(key: str) -> None:
    """Append the pid to ``{key}:deliveries``, then SIGKILL this worker process."""
    _redis().rpush(f"{key}:deliveries", os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)
