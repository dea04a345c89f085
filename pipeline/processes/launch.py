"""What every processor module does at its bottom: build its processor from the
environment, attach it under Dramatiq's CLI, or run it the seed's way.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from pipeline.errors import RedisUnreachable
from pipeline.settings import Settings
from pipeline.streams.connection import wait_until_reachable

from .processor import ProcessorClient


def options_from_env(default_id: str, default_capacity: int) -> dict[str, Any]:
    """The constructor arguments a deployment sets through the environment:
    ``PROCESSOR_ID``, ``ORCHESTRATOR_URL``, ``PROCESSOR_CAPACITY``, ``HEALTH_CHECK_INTERVAL``."""
    return {
        "processor_id": os.environ.get("PROCESSOR_ID", default_id),
        "orchestrator_url": os.environ.get("ORCHESTRATOR_URL", ""),
        "capacity": int(os.environ.get("PROCESSOR_CAPACITY", str(default_capacity))),
        "health_check_interval": float(os.environ.get("HEALTH_CHECK_INTERVAL", "5")),
    }


def run_until_signalled(processor: ProcessorClient) -> None:
    """The seed's ``__main__``: wait for Redis (``FRAMEFLOW_WAIT_FOR_REDIS`` seconds, logging
    each retry), then run until SIGINT/SIGTERM stop the processor gracefully. Redis still
    away after that: one line naming its URL (password masked), and exit code 1."""
    if processor.redis_url is not None:
        try:
            wait_until_reachable(processor.redis_url, Settings.from_env().wait_for_redis_s)
        except RedisUnreachable as error:
            raise SystemExit(f"{processor.processor_id}: {error}") from None
    signal.signal(signal.SIGINT, lambda *_: processor.stop())
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    asyncio.run(processor.start())
