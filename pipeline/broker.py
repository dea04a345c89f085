"""Importing this module makes a :class:`RedisStreamsBroker` Dramatiq's global broker,
configured from the environment, so Dramatiq's CLI works as usual::

    REDIS_URL=redis://127.0.0.1:6379/0 dramatiq pipeline.broker my_actors

Without ``REDIS_URL`` (or ``REDIS_HOST``) the broker uses ``localhost:6379`` when it
answers, else the embedded Redis shared by this machine's unconfigured frameflow
processes (:mod:`pipeline.streams.shared_redis`), and logs which.
"""

from __future__ import annotations

import dramatiq

from middleware.observability import add_observability
from pipeline.streams.broker import RedisStreamsBroker

broker = RedisStreamsBroker()
# Traces (when OTEL_* asks for them), per-message metrics and log lines that name their frame,
# for every actor of the process, frameflow's processors or not.
add_observability(broker)
dramatiq.set_broker(broker)

__all__ = ["broker"]
