"""The processes of a processor, each visible on its own: its pid, its counters, its health endpoint.

A processor may run as several processes (``dramatiq pipeline.broker workers.x -p 2``, several
containers of one service). They share one processor entry (:mod:`pipeline.domain.registry`), so
the processor stays one routing target: one queue, one offer of its capabilities. Beside it each
process writes its own entry, ``<ns>:processor:<id>:process:<host>:<pid>``: a hash with the fields
of a processor entry (:class:`~pipeline.domain.registry.ProcessorInfo`, its own pid, counters and
health endpoint) and the same TTL, listed in the set ``<ns>:processor:<id>:processes``. A process
that stops heartbeating simply expires, as a processor does.

The processor entry's counters are the sums over its live processes (:func:`summed_counters`),
written by whichever process beats, so no view counts half the frames. A process killed without
warning still counts until its entry expires; then its frames leave the sums.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis

from pipeline.domain.keys import process_key, processes_index_key
from pipeline.domain.registry import ProcessorInfo

#: The counters of a processor entry that add up over its processes.
SUMMED_COUNTERS = ("in_flight", "processed", "failed", "rejected", "frames_per_s")


def process_name(info: ProcessorInfo) -> str:
    """How a process is named among its processor's: ``<host>:<pid>`` (pids repeat across hosts)."""
    return f"{info.host}:{info.pid}"


class ProcessEntries:
    """Write, list and remove the entries of a processor's processes.

    Parameters:
      client: the Redis client.
      namespace: key prefix (the broker's namespace).
    """

    def __init__(self, client: redis.Redis, namespace: str = "frameflow") -> None:
        self.client = client
        self.namespace = namespace

    def beat(self, info: ProcessorInfo, ttl_s: float) -> list[ProcessorInfo]:
        """Write this process's entry (``info``: its own pid and counters) for ``ttl_s`` more
        seconds; returns every live process of the processor, this one included."""
        ttl_ms = int(ttl_s * 1000)
        key = process_key(self.namespace, info.processor_id, process_name(info))
        index = processes_index_key(self.namespace, info.processor_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping={**info.to_fields(), "heartbeat_at": str(time.time())})
        pipe.pexpire(key, ttl_ms)
        pipe.sadd(index, process_name(info))
        pipe.pexpire(index, ttl_ms)  # outlives its last live process by one TTL at most
        pipe.execute()
        return self.of(info.processor_id)

    def of(self, processor_id: str) -> list[ProcessorInfo]:
        """The live processes of ``processor_id``, by host and pid."""
        return self.of_each([processor_id]).get(processor_id, [])

    def of_each(self, processor_ids: Iterable[str]) -> dict[str, list[ProcessorInfo]]:
        """The live processes of each processor that has any, in two round trips; names of
        processes whose entry expired are dropped from the index on the way."""
        ids = list(processor_ids)
        pipe = self.client.pipeline(transaction=False)
        for processor_id in ids:
            pipe.smembers(processes_index_key(self.namespace, processor_id))
        names = {
            processor_id: sorted(member.decode() for member in members)
            for processor_id, members in zip(ids, pipe.execute(), strict=True)
        }
        pipe = self.client.pipeline(transaction=False)
        for processor_id, processes in names.items():
            for name in processes:
                pipe.hgetall(process_key(self.namespace, processor_id, name))
        replies = iter(pipe.execute())
        found: dict[str, list[ProcessorInfo]] = {}
        gone: dict[str, list[str]] = {}
        for processor_id, processes in names.items():
            for name in processes:
                raw = next(replies)
                if raw:
                    found.setdefault(processor_id, []).append(ProcessorInfo.from_fields(raw))
                else:
                    gone.setdefault(processor_id, []).append(name)
        for processor_id, expired in gone.items():
            self.client.srem(processes_index_key(self.namespace, processor_id), *expired)
        return found

    def remove(self, info: ProcessorInfo) -> list[ProcessorInfo]:
        """Remove this process's entry (it is stopping); returns the processes still live."""
        name = process_name(info)
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(process_key(self.namespace, info.processor_id, name))
        pipe.srem(processes_index_key(self.namespace, info.processor_id), name)
        pipe.execute()
        return self.of(info.processor_id)


def summed_counters(processes: list[ProcessorInfo]) -> dict[str, Any]:
    """What a processor entry says of all its processes: :data:`SUMMED_COUNTERS` added up, and
    the mean latency of those that processed a frame."""
    sums: dict[str, Any] = {name: sum(getattr(info, name) for info in processes) for name in SUMMED_COUNTERS}
    latencies = [info.latency_ms for info in processes if info.processed]
    if latencies:
        sums["latency_ms"] = round(sum(latencies) / len(latencies), 3)
    return sums


def each_process(processors: list[ProcessorInfo], processes: dict[str, list[ProcessorInfo]]) -> list[ProcessorInfo]:
    """Every process of the live ``processors``: their process entries, or the processor entry
    itself for a processor that writes none (one run by an older frameflow)."""
    return [entry for info in processors if info.alive for entry in (processes.get(info.processor_id) or [info])]
