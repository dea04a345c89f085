"""What an operator looks at: processors, queues, parked frames, in one snapshot.

frameflow keeps no list of queues: they are found in Redis. A stream is a queue
when it has the ``workers`` consumer group, when its first entry carries a
Dramatiq envelope, when it has delayed messages or dead letters, or when a
registered processor names it (result streams and the broker's own streams are
not queues). Discovery is two ``SCAN``s; the numbers then come in two pipelined
round trips, however many queues there are.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

import redis

from middleware.load import backlog_and_in_flight
from pipeline.domain.registry import BREAKER_CLOSED, ProcessorInfo, ProcessorRegistry
from pipeline.errors import InvalidQueueName, UnknownQueue
from pipeline.streams.keys import (
    CONSUMER_GROUP,
    ENVELOPE_FIELD,
    namespace_pattern,
    queue_keys,
    queue_name_for,
    stream_key,
    validate_queue_name,
)

#: A consumer seen by Redis within this many milliseconds counts as active.
ACTIVE_CONSUMER_IDLE_MS = 30_000


@dataclasses.dataclass(frozen=True)
class QueueSnapshot:
    """One queue: entries nobody took yet (backlog), taken and unacknowledged (pending), and the rest."""

    queue_name: str
    stream: str
    backlog: int
    pending: int
    consumers: int
    idle_consumers: int
    oldest_age_s: float | None
    delayed: int
    dead_letters: int
    drops: dict[str, int]
    processor_id: str | None = None

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())


@dataclasses.dataclass(frozen=True)
class ParkedSnapshot:
    """Frames waiting for a processor with ``capability`` to register."""

    capability: str
    frames: int
    oldest_age_s: float | None


@dataclasses.dataclass(frozen=True)
class PipelineSnapshot:
    at: float
    processors: list[ProcessorInfo]
    queues: list[QueueSnapshot]
    parked: list[ParkedSnapshot]


def take_snapshot(client: redis.Redis, namespace: str) -> PipelineSnapshot:
    processors = ProcessorRegistry(client, namespace).list(include_dead=True)
    queues, parked = snapshot_queues(client, namespace, processors)
    return PipelineSnapshot(at=time.time(), processors=processors, queues=queues, parked=parked)


def processing_rates(snapshot: PipelineSnapshot) -> dict[str, float]:
    """Frames processed per second by each processor that beats on time, as its last heartbeat
    measured it (over the heartbeat's own interval: readers' clocks play no part)."""
    return {
        info.processor_id: info.frames_per_s
        for info in snapshot.processors
        if info.alive and not info.is_stale(snapshot.at)
    }


def age(seconds: float | None) -> str:
    """A duration as people read it: ``4.2s``, ``35s``, ``3m05s``, ``2h10m``; ``-`` for none."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def processor_state(info: ProcessorInfo, now: float | None = None) -> str:
    """``live``, ``dead``, or what is wrong with it: ``stale``, ``draining``, ``breaker open``..."""
    if not info.alive:
        return "dead"
    states = ["stale"] if info.is_stale(now) else []  # killed or stalled: not reaped yet
    if info.draining:
        states.append("draining")
    if info.breaker != BREAKER_CLOSED:
        states.append(f"breaker {info.breaker.replace('_', '-')}")
    return ", ".join(states) or "live"


def snapshot_queues(
    client: redis.Redis, namespace: str, processors: Iterable[ProcessorInfo] = ()
) -> tuple[list[QueueSnapshot], list[ParkedSnapshot]]:
    """Every queue and every capability with parked frames (see the module docstring)."""
    owners = {info.queue_name: info.processor_id for info in processors if info.queue_name}
    keys = _discover(client, namespace)
    pipe = client.pipeline(transaction=False)
    for stream in keys.streams:
        pipe.xlen(stream)
        pipe.xinfo_groups(stream)
        pipe.xrange(stream, count=1)
    for key in keys.parked.values():
        pipe.xlen(key)
        pipe.xrange(key, count=1)
    replies = pipe.execute(raise_on_error=False)
    now = time.time()
    streams = {stream: replies[3 * index : 3 * index + 3] for index, stream in enumerate(keys.streams)}
    offset = 3 * len(keys.streams)
    parked = [
        ParkedSnapshot(capability, _int(replies[offset + 2 * index]), _age_s(replies[offset + 2 * index + 1], now))
        for index, capability in enumerate(keys.parked)
    ]

    named = {
        stream for stream, (_, groups, first) in streams.items() if _has_workers_group(groups) or _is_envelope(first)
    }
    queue_names: dict[str, str] = {}
    for stream in {*named, *keys.with_dead, *keys.with_delayed, *(stream_key(name) for name in owners)}:
        try:
            queue_names[stream] = validate_queue_name(queue_name_for(stream))
        except InvalidQueueName:
            continue  # a stream no Dramatiq queue can have: not ours
    ordered = sorted(queue_names.items(), key=lambda item: item[1])
    pipe = client.pipeline(transaction=False)
    for stream, queue_name in ordered:
        companions = queue_keys(namespace, queue_name)
        pipe.zcard(companions.delayed)
        pipe.xlen(companions.dead)
        pipe.hgetall(companions.drops)
        pipe.xinfo_consumers(stream, CONSUMER_GROUP)  # an error reply when there is no group: no consumers
    details = pipe.execute(raise_on_error=False)

    queues = []
    for index, (stream, queue_name) in enumerate(ordered):
        delayed, dead, drops, consumers = details[4 * index : 4 * index + 4]
        length, groups, first = streams.get(stream, (0, [], []))
        backlog, pending = backlog_and_in_flight(length, groups)
        consumers = consumers if _listing(consumers) else []
        active = sum(1 for consumer in consumers if int(consumer.get("idle", 0)) < ACTIVE_CONSUMER_IDLE_MS)
        queues.append(
            QueueSnapshot(
                queue_name=queue_name,
                stream=stream,
                backlog=backlog,
                pending=pending,
                consumers=active,
                idle_consumers=len(consumers) - active,
                oldest_age_s=_age_s(first, now),
                delayed=_int(delayed),
                dead_letters=_int(dead),
                drops={name.decode(): int(value) for name, value in drops.items()} if isinstance(drops, dict) else {},
                processor_id=owners.get(queue_name),
            )
        )
    return queues, sorted(parked, key=lambda item: item.capability)


@dataclasses.dataclass
class _Keys:
    """What the scans found: streams that may be queues, the streams with dead letters or delayed
    messages (by their queue's stream key), and the parked-frame streams by capability."""

    streams: list[str] = dataclasses.field(default_factory=list)
    with_dead: set[str] = dataclasses.field(default_factory=set)
    with_delayed: set[str] = dataclasses.field(default_factory=set)
    parked: dict[str, str] = dataclasses.field(default_factory=dict)


def _discover(client: redis.Redis, namespace: str) -> _Keys:
    found = _Keys()
    dead_prefix, parked_prefix, delayed_prefix = (
        namespace_pattern(namespace, kind)[:-1] for kind in ("dead", "parked", "delayed")
    )
    for key in _scan(client, _type="STREAM"):
        if (stream := _tagged(key, dead_prefix)) is not None:
            found.with_dead.add(stream)
        elif (capability := _tagged(key, parked_prefix)) is not None:
            found.parked[capability] = key
        elif not key.startswith(f"{namespace}:"):  # the broker's other streams (health) are no queues
            found.streams.append(key)
    for key in _scan(client, match=f"{delayed_prefix}*", _type="ZSET"):
        if (stream := _tagged(key, delayed_prefix)) is not None:
            found.with_delayed.add(stream)
    return found


def resolve_queue(client: redis.Redis, namespace: str, name: str) -> str:
    """The queue named ``name`` (a queue name, or its stream key with colons).

    Raises:
      UnknownQueue: nothing of that queue is in Redis: no stream, no delayed messages, no dead letters.
      InvalidQueueName: ``name`` cannot be a queue name.
    """
    try:
        queue_name = validate_queue_name(queue_name_for(name))
    except InvalidQueueName:
        raise InvalidQueueName(
            f"invalid queue name {name!r}: give a queue (frames.ready.sample-1) or its stream (frames:ready:sample-1)"
        ) from None
    keys = queue_keys(namespace, queue_name)
    if not client.exists(keys.stream, keys.delayed, keys.dead):
        raise UnknownQueue(f"unknown queue {name!r}: no messages, delayed messages or dead letters (frameflow queues)")
    return queue_name


def _scan(client: redis.Redis, **options: Any) -> Iterable[str]:
    for key in client.scan_iter(count=1000, **options):
        yield key.decode("utf-8", "replace") if isinstance(key, bytes) else key


def _tagged(key: str, prefix: str) -> str | None:
    """``S`` for a key ``<prefix>{S}``, else None."""
    if key.startswith(prefix + "{") and key.endswith("}"):
        return key[len(prefix) + 1 : -1]
    return None


def _listing(reply: Any) -> bool:
    return isinstance(reply, list)


def _has_workers_group(groups: Any) -> bool:
    return _listing(groups) and any(group.get("name") in (CONSUMER_GROUP, CONSUMER_GROUP.encode()) for group in groups)


def _is_envelope(first: Any) -> bool:
    return _listing(first) and bool(first) and ENVELOPE_FIELD.encode() in first[0][1]


def _age_s(first: Any, now: float) -> float | None:
    """Age of the first entry of an ``XRANGE ... COUNT 1`` reply, from its id's milliseconds."""
    if not _listing(first) or not first:
        return None
    entry_id = first[0][0]
    millis = int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0])
    return max(0.0, now - millis / 1000)


def _int(reply: Any) -> int:
    return reply if isinstance(reply, int) else 0
