"""What every processor module does at its bottom: build its processor from the
environment, attach it under Dramatiq's CLI, or run it the seed's way.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

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
    """The seed's ``__main__``: SIGINT/SIGTERM stop the processor gracefully."""
    signal.signal(signal.SIGINT, lambda *_: processor.stop())
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    asyncio.run(processor.start())
