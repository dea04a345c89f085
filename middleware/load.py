"""A processor queue's real load: ``(backlog + in flight) / capacity``, read from its consumer group.

Backlog is the ``workers`` group's lag (entries no consumer has taken yet), in flight
its pending count; Redis 6.2 reports no lag, where it is ``XLEN - pending`` (the same
number here, since acked entries are deleted). The router caches these for its
``refresh_s``; the queue overview shows them.

The router measures every live processor's queue at each refresh, so with hundreds
of processors the measure is sent on the broker's hot-path connections
(:mod:`pipeline.streams.direct`, one round trip per master on a cluster), whose replies
skip redis-py's per-command parsing: half the client CPU of a redis-py pipeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipeline.domain.registry import ProcessorInfo
from pipeline.streams.keys import CONSUMER_GROUP

if TYPE_CHECKING:
    from pipeline.streams.broker import RedisStreamsBroker


def measure_load(broker: RedisStreamsBroker, processors: list[ProcessorInfo]) -> dict[str, float]:
    """Each processor's load (queued and in-flight frames per unit of capacity), in one round trip."""
    commands: list[tuple[str, ...]] = []
    for info in processors:
        stream = broker.keys_for(info.queue_name).stream
        commands += [("XLEN", stream), ("XINFO", "GROUPS", stream)]
    replies = broker.direct.execute_many(commands) if commands else []
    load: dict[str, float] = {}
    for index, info in enumerate(processors):
        length, groups = replies[2 * index], replies[2 * index + 1]
        backlog, in_flight = backlog_and_in_flight(length, groups)
        load[info.processor_id] = (backlog + in_flight) / max(1, info.capacity)
    return load


def backlog_and_in_flight(length: Any, groups: Any) -> tuple[int, int]:
    """Lag (entries not yet taken) and pending of the ``workers`` group; a queue never read yet is all backlog.

    ``groups`` is ``XINFO GROUPS``' reply as redis-py parses it (dicts with text keys) or as it
    comes (maps with bytes keys, or flat lists of names and values)."""
    if not isinstance(length, int):
        return 0, 0
    if not isinstance(groups, list):
        return length, 0
    for group in groups:
        fields = _fields(group)
        if fields.get("name") in (CONSUMER_GROUP, CONSUMER_GROUP.encode()):
            pending = int(fields.get("pending") or 0)
            lag = fields.get("lag")
            backlog = int(lag) if lag is not None else max(0, length - pending)
            return backlog, pending
    return length, 0


def _fields(group: Any) -> Mapping[Any, Any]:
    """One group of ``XINFO GROUPS``, keyed by text."""
    if isinstance(group, list):
        group = dict(zip(group[::2], group[1::2], strict=False))
    if not isinstance(group, dict):
        return {}
    return {name.decode() if isinstance(name, bytes) else name: value for name, value in group.items()}
