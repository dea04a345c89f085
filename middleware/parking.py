"""Parked frames: frames that wait on ``<ns>:parked:{capability}`` for a processor that serves it.

The router parks a frame when no live processor offers one of its capabilities
(``park_bounded.lua`` keeps each parked stream at its bound, oldest dropped), and
a processor that starts (or the scheduler, for one that registers again) releases
the frames parked for its capabilities: each is moved to a processor queue exactly
once, or dropped and counted as stale when it is past its max age.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import dramatiq

from pipeline.domain.claim_check import release_images
from pipeline.domain.frames import IMAGE_REF_FIELD, is_stale
from pipeline.domain.keys import parked_drops_key, parked_key
from pipeline.errors import MalformedEntry
from pipeline.streams.wire import decode_entry

from .decisions import RoutingDecision

if TYPE_CHECKING:
    from pipeline.streams.broker import RedisStreamsBroker


#: How the router moves one parked entry (:meth:`~middleware.routing.CapabilityRouter.move`): broker,
#: parked stream, entry id, its decoded message and its fields; None when another process moved it.
MoveEntry = Callable[["RedisStreamsBroker", str, bytes, dramatiq.Message, dict[bytes, bytes]], RoutingDecision | None]


def parked_reason(capability: str) -> str:
    """Why a frame was parked for ``capability`` (stored with it, and on its send span)."""
    return f"no live processor for capability {capability!r}"


def release_parked(
    move: MoveEntry, refreshed: Callable[[], None], broker: RedisStreamsBroker, capabilities: list[str]
) -> tuple[int, int]:
    """Route frames parked for ``capabilities`` with the router's ``move``; frames past their max age are
    dropped, counted as stale and their image references released. Returns (routed, dropped)."""
    refreshed()  # the router reads the registry afresh: a processor just registered
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
            decision = move(broker, key, entry_id, message, fields)  # None: another process moved it
            routed += 1 if decision is not None and decision.targets else 0
    return routed, dropped


def _decode_parked(fields: dict[bytes, bytes]) -> dramatiq.Message | None:
    cleaned = {name: value for name, value in fields.items() if name != b"parked_reason"}
    try:
        return decode_entry(cleaned)
    except MalformedEntry:
        return None
