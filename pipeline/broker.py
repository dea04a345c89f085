"""Importing this module makes a :class:`RedisStreamsBroker` Dramatiq's global broker,
configured from the environment, so Dramatiq's CLI works as usual::

    REDIS_URL=redis://127.0.0.1:6379/0 dramatiq pipeline.broker my_actors

Without ``REDIS_URL`` (or ``REDIS_HOST``) the broker starts an embedded Redis
private to this process, which other processes cannot see: set ``REDIS_URL``
(or run ``frameflow redis``) whenever more than one process is involved.
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
