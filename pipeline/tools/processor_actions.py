"""Taking a processor out of rotation and back: what ``frameflow drain``/``deregister`` and the
dashboard's buttons do, written once so the two front ends cannot drift apart.

Each function acts on Redis and returns the sentence an operator reads; the front end only prints
it (the CLI) or sends it back as JSON (the dashboard).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from pipeline.domain.registry import ProcessorInfo, ProcessorRegistry
from pipeline.errors import UnknownProcessor
from pipeline.streams.broker import RedisStreamsBroker
from pipeline.streams.keys import queue_keys
from pipeline.tools.overview import age


def known_processor(registry: ProcessorRegistry, processor_id: str, *, live_only: bool) -> ProcessorInfo | None:
    """The live entry of ``processor_id`` (None for a dead but registered one, unless ``live_only``).

    Raises:
      UnknownProcessor: no such processor (or not a live one with ``live_only``), naming the live ones.
    """
    info = registry.get(processor_id)
    if info is not None or (not live_only and processor_id in registry.known_ids()):
        return info
    live = [item.processor_id for item in registry.list()]
    known = f"live processors: {', '.join(live)}" if live else "no processor is live"
    raise UnknownProcessor(f"unknown processor {processor_id!r} ({known})")


def set_draining(client: redis.Redis, namespace: str, processor_id: str, *, draining: bool) -> str:
    """Stop (``draining``) or restart routing frames to a live processor."""
    registry = ProcessorRegistry(client, namespace)
    info = known_processor(registry, processor_id, live_only=True)
    assert info is not None
    registry.update(processor_id, draining=draining)
    if not draining:
        return f"resumed {processor_id}: frames are routed to it again"
    queued = client.xlen(queue_keys(namespace, info.queue_name).stream)
    return f"draining {processor_id}: no new frames are routed to it; {queued} still queued for it"


def deregister_processor(
    client: redis.Redis, namespace: str, processor_id: str, make_broker: Callable[..., RedisStreamsBroker]
) -> str:
    """Remove ``processor_id`` from the registry; a dead one's queued frames go to live peers at once
    (what the scheduler would do, on the broker ``make_broker(*middleware)`` returns)."""
    registry = ProcessorRegistry(client, namespace)
    info = known_processor(registry, processor_id, live_only=False)
    registry.deregister(processor_id)
    if info is not None:
        return (
            f"deregistered {processor_id}; it is alive (heartbeat {age(time.time() - info.heartbeat_at)} ago) "
            "and registers again "
            f"at its next heartbeat unless it is stopped; its queue is left to it"
        )
    from middleware.routing import CapabilityRouter
    from pipeline.processes.scheduler import PipelineScheduler

    rerouted = PipelineScheduler(make_broker(CapabilityRouter())).reap(processor_id)
    if rerouted is None:
        return f"deregistered {processor_id}; a scheduler is re-routing its queued frames"
    return f"deregistered {processor_id}; re-routed {rerouted} queued frame(s) to live peers"
