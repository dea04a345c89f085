"""The frame domain's Lua scripts, in ``pipeline/domain/scripts``: bounded processor queues and
parked streams, claim-checked image references, and the scheduler's reaping. They share the broker
core's helpers (reading an entry's ``image_ref``), and are added to a broker by its routing
middleware when it is attached (``broker.scripts["enqueue_bounded"]``)."""

from __future__ import annotations

import redis
from redis.commands.core import Script

from pipeline.streams.lua import register_scripts


def domain_scripts(client: redis.Redis) -> dict[str, Script]:
    """The domain's scripts, registered with ``client`` (sent once, then run by SHA)."""
    return register_scripts(client, __package__, helpers_from=("pipeline.streams",))
