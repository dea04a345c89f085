"""A processor queue's real load: ``(backlog + in flight) / capacity``, read from its consumer group.

Backlog is the ``workers`` group's lag (entries no consumer has taken yet), in flight
its pending count; Redis 6.2 reports no lag, where it is ``XLEN - pending`` (the same
number here, since acked entries are deleted). The router caches these for its
``refresh_s``; the queue overview shows them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.domain.registry import ProcessorInfo
from pipeline.streams.keys import CONSUMER_GROUP

if TYPE_CHECKING:
    from pipeline.streams.broker import RedisStreamsBroker


def measure_load(broker: RedisStreamsBroker, processors: list[ProcessorInfo]) -> dict[str, float]:
    """Each processor's load (queued and in-flight frames per unit of capacity), in one round trip."""
    pipe = broker.client.pipeline(transaction=False)
    for info in processors:
        stream = broker.keys_for(info.queue_name).stream
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
    replies = pipe.execute(raise_on_error=False)
    load: dict[str, float] = {}
    for index, info in enumerate(processors):
        length, groups = replies[2 * index], replies[2 * index + 1]
        backlog, in_flight = backlog_and_in_flight(length, groups)
        load[info.processor_id] = (backlog + in_flight) / max(1, info.capacity)
    return load


def backlog_and_in_flight(length: Any, groups: Any) -> tuple[int, int]:
    """Lag (entries not yet taken) and pending of the ``workers`` group; a queue never read yet is all backlog."""
    if not isinstance(length, int):
        return 0, 0
    if not isinstance(groups, list):
        return length, 0
    for group in groups:
        name = group.get("name")
        if name in (CONSUMER_GROUP, CONSUMER_GROUP.encode()):
            pending = int(group.get("pending") or 0)
            lag = group.get("lag")
            backlog = int(lag) if lag is not None else max(0, length - pending)
            return backlog, pending
    return length, 0
