"""What every processor module does at its bottom: build its processor from the
environment, attach it under Dramatiq's CLI, or run it the seed's way.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from pipeline.errors import FrameflowError
from pipeline.settings import Settings

from .processor import ProcessorClient


def options_from_env(default_id: str, default_capacity: int) -> dict[str, Any]:
    """The constructor arguments a deployment sets through the environment:
    ``PROCESSOR_ID``, ``ORCHESTRATOR_URL``, ``PROCESSOR_CAPACITY``, ``HEALTH_CHECK_INTERVAL``,
    ``HEALTH_PORT`` (0: any free port, so each of several worker processes gets its own), read
    through :class:`~pipeline.settings.Settings` (a malformed one raises
    :class:`~pipeline.errors.BadSetting` naming it, which ``frameflow worker`` prints as one line)."""
    settings = Settings.from_env()
    return {
        "processor_id": settings.processor_id or default_id,
        "orchestrator_url": settings.orchestrator_url,
        "capacity": settings.processor_capacity or default_capacity,
        "health_check_interval": settings.health_check_interval_s,
        "health_port": settings.health_port,
    }


def run_until_signalled(processor: ProcessorClient) -> None:
    """The seed's ``__main__``: run until SIGINT/SIGTERM stop the processor gracefully.

    ``start()`` waits for Redis (``FRAMEFLOW_WAIT_FOR_REDIS`` seconds, 0 for as long as it
    takes, logging each retry); a signal during that wait ends it at once, exit code 0. Redis
    still away when the wait is spent: one line naming its URL (password masked), exit code 1.
    A processor that cannot start (a health port that cannot be bound, its weights missing, a
    bad setting): one line saying why, exit code 1 too.

    As the program's entry point it also shows the processor's log (its start-up, ``mtcnn
    loaded on cpu``) on stderr at ``FRAMEFLOW_LOG_LEVEL``, unless logging is configured already.
    """
    show_logs()
    signal.signal(signal.SIGINT, lambda *_: processor.stop())
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    try:
        asyncio.run(processor.start())
    except FrameflowError as error:  # EndpointUnavailable, WeightsMissing...: one line, exit code 1
        raise SystemExit(f"{processor.processor_id}: {error}") from None


def show_logs() -> None:
    """Log INFO and above (``FRAMEFLOW_LOG_LEVEL``) to stderr when nothing configured logging yet."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(Settings.from_env().log_level)
