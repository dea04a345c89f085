"""Parked frames: frames that wait on ``<ns>:parked:{capability}`` for a processor that serves it.

The router parks a frame when no live processor offers one of its capabilities
(``park_bounded.lua`` keeps each parked stream at its bound, oldest dropped), and
a processor that starts (or the scheduler, for one that registers again) releases
the frames parked for its capabilities: each is moved to a processor queue exactly
once, or dropped and counted as stale when it is past its max age.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import dramatiq

from pipeline.domain.claim_check import release_images
from pipeline.domain.frames import IMAGE_REF_FIELD, is_stale
from pipeline.domain.keys import parked_drops_key, parked_key
from pipeline.errors import MalformedEntry
from pipeline.streams.wire import decode_entry

from .decisions import RoutingDecision

if TYPE_CHECKING:
    from pipeline.streams.broker import RedisStreamsBroker


class FrameMover(Protocol):
    """What releasing parked frames needs of the router (:class:`~middleware.routing.CapabilityRouter`)."""

    def invalidate(self) -> None: ...

    def move(
        self,
        broker: RedisStreamsBroker,
        stream: str,
        entry_id: bytes,
        message: dramatiq.Message,
        fields: dict[bytes, bytes],
    ) -> RoutingDecision | None: ...


def parked_reason(capability: str) -> str:
    """Why a frame was parked for ``capability`` (stored with it, and on its send span)."""
    return f"no live processor for capability {capability!r}"


def release_parked(router: FrameMover, broker: RedisStreamsBroker, capabilities: list[str]) -> tuple[int, int]:
    """Route frames parked for ``capabilities`` with ``router``; frames past their max age are
    dropped, counted as stale and their image references released. Returns (routed, dropped)."""
    router.invalidate()
    routed = dropped = 0
    for capability in capabilities:
        key = parked_key(broker.namespace, capability)
        for entry_id, fields in broker.client.xrange(key, count=1000):
            message = _decode_parked(fields)
            if message is None or is_stale(message.options):
                if broker.client.xdel(key, entry_id):  # counted by whoever deleted it, once
                    dropped += 1
                    broker.client.hincrby(parked_drops_key(broker.namespace), "stale", 1)
                    release_images(broker, [fields.get(IMAGE_REF_FIELD.encode(), b"")])
                continue
            decision = router.move(broker, key, entry_id, message, fields)  # None: another process moved it
            routed += 1 if decision is not None and decision.targets else 0
    return routed, dropped


def _decode_parked(fields: dict[bytes, bytes]) -> dramatiq.Message | None:
    cleaned = {name: value for name, value in fields.items() if name != b"parked_reason"}
    try:
        return decode_entry(cleaned)
    except MalformedEntry:
        return None
