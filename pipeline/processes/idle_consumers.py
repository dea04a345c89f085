"""Removing the consumers of dead workers from the queues' consumer groups.

Each worker process reads a queue under a consumer name of its own (host, pid and a broker id), so
a queue's group gains a consumer with every worker start and, left alone, never loses one:
``XINFO CONSUMERS`` grows with every restart, and so does every tool that lists it. Telling a dead
worker's consumer from a live one that merely waits on an empty queue cannot rest on the idle time
Redis keeps (whether a blocked ``XREADGROUP`` resets it differs between versions), so a live
consumer says it lives every second (its name scored with the time in the queue's consumers set), and a
pass removes, queue by queue, the consumers that hold nothing pending and have shown no sign of life
for ``idle_s`` (``remove_idle_consumers.lua``, atomic per queue: a consumer that took an entry
meanwhile stays). A dead consumer that still holds entries stays until the leases lapse and a live
consumer takes them over (``claim.lua``); the next pass removes it.

The queues are found by their consumers sets (``SCAN`` of ``<ns>:consumers:*``, as the scheduler
finds dead letters): every queue a worker consumed, processor queues and the broker's other queues alike.
"""

from __future__ import annotations

import logging
import time

from pipeline.streams.broker import RedisStreamsBroker
from pipeline.streams.keys import namespace_pattern, tagged_stream

logger = logging.getLogger(__name__)


def remove_idle_consumers(broker: RedisStreamsBroker, idle_s: float) -> dict[str, list[str]]:
    """Remove from every queue's group the consumers that hold nothing and showed no sign of life
    for ``idle_s``; returns ``{stream: [names removed]}`` for the queues that lost any, and logs
    their number in one INFO line."""
    idle_ms = int(idle_s * 1000)
    removed: dict[str, list[str]] = {}
    for key in broker.client.scan_iter(match=namespace_pattern(broker.namespace, "consumers"), count=500):
        consumers_key = key.decode() if isinstance(key, bytes) else key
        stream = tagged_stream(consumers_key)
        names = broker.scripts["remove_idle_consumers"](
            keys=[stream, consumers_key], args=[broker.group, idle_ms, int(time.time() * 1000)]
        )
        if names:
            removed[stream] = [name.decode() for name in names]
    if removed:
        count = sum(len(names) for names in removed.values())
        logger.info("Removed %d idle consumer(s) of dead workers from %d queue(s).", count, len(removed))
    return removed
