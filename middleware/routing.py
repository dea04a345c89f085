"""The orchestrator: routes every frame to per-processor queues by capability.

For each capability a frame needs, the router picks the live processor with
the lowest real load, ``(backlog + in flight) / capacity``, where backlog is
the processor queue's consumer-group lag (entries no consumer has taken) and
in flight is its pending count. A processor that offers several of the needed
capabilities receives the frame once. Processors that are draining or whose
breaker is open are skipped (one half-open probe is let through after the
cool-down). With no live processor for a capability, the frame is parked
with the reason and routed when a capable processor registers.

Routing costs no Redis round trip per frame: the registry and queue loads are
cached for ``refresh_s`` and the router adds what it routed since the last
refresh to its load estimate.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.middleware import Middleware

from pipeline.errors import MalformedEntry
from pipeline.frames import FRAME_OPTION, IMAGE_REF_FIELD, is_stale, now_ms
from pipeline.keys import image_key, parked_key, probe_key
from pipeline.registry import BREAKER_OPEN, ProcessorInfo, ProcessorRegistry
from pipeline.wire import decode_entry, encode_message

if TYPE_CHECKING:
    from pipeline.redis_streams import RedisStreamsBroker

logger = logging.getLogger(__name__)

#: Frames whose image is larger than this are claim-checked even for a single processor.
INLINE_IMAGE_LIMIT = 64 * 1024


@dataclasses.dataclass(frozen=True)
class RoutingDecision:
    """Where one frame went: processor ids, and the reason for capabilities left unserved."""

    frame_id: str
    targets: tuple[str, ...]
    parked: tuple[str, ...] = ()
    reason: str | None = None
    dropped: int = 0


class CapabilityRouter(Middleware):
    """Routes frame messages (option ``capabilities``) to processor queues.

    Parameters:
      refresh_s: how long the cached registry and loads are trusted.
      breaker_cooldown_s: how long an open breaker waits before one probe frame.
      image_ttl_s: how long a claim-checked image is kept.
      default_max_age_ms: a frame's max age when it does not say.
    """

    def __init__(
        self,
        *,
        refresh_s: float = 0.5,
        breaker_cooldown_s: float = 5.0,
        image_ttl_s: float = 60.0,
        default_max_age_ms: int = 5000,
    ) -> None:
        self.refresh_s = refresh_s
        self.breaker_cooldown_s = breaker_cooldown_s
        self.image_ttl_s = image_ttl_s
        self.default_max_age_ms = default_max_age_ms
        self._lock = threading.Lock()
        self._processors: list[ProcessorInfo] = []
        self._load: dict[str, float] = {}
        self._refreshed_at = 0.0

    @property
    def actor_options(self) -> set[str]:
        return {"capabilities", "max_age_ms"}

    # -- the cache ------------------------------------------------------------------------
    def invalidate(self) -> None:
        with self._lock:
            self._refreshed_at = 0.0

    def _snapshot(self, broker: RedisStreamsBroker) -> tuple[list[ProcessorInfo], dict[str, float]]:
        with self._lock:
            if time.monotonic() - self._refreshed_at < self.refresh_s:
                return self._processors, self._load
        processors = ProcessorRegistry(broker.client, broker.namespace).list()
        load = self._measure_load(broker, processors)
        with self._lock:
            self._processors, self._load, self._refreshed_at = processors, load, time.monotonic()
            return processors, load

    def _measure_load(self, broker: RedisStreamsBroker, processors: list[ProcessorInfo]) -> dict[str, float]:
        pipe = broker.client.pipeline(transaction=False)
        for info in processors:
            stream = broker.keys_for(info.queue_name).stream
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
        replies = pipe.execute(raise_on_error=False)
        load: dict[str, float] = {}
        for index, info in enumerate(processors):
            length, groups = replies[2 * index], replies[2 * index + 1]
            backlog, in_flight = _backlog_and_in_flight(length, groups)
            load[info.processor_id] = (backlog + in_flight) / max(1, info.capacity)
        return load

    # -- routing --------------------------------------------------------------------------
    def route_message(self, broker: RedisStreamsBroker, message: dramatiq.Message) -> RoutingDecision:
        """Send ``message`` (a frame) to the processors that serve its capabilities."""
        capabilities = list(message.options.get("capabilities") or ())
        frame = dict(message.args[0]) if message.args and isinstance(message.args[0], dict) else {}
        frame_id = frame.get("frame_id") or message.message_id
        processors, load = self._snapshot(broker)
        targets, unserved = self._choose(broker, capabilities, processors, load)
        options = {
            FRAME_OPTION: True,
            "captured_at_ms": message.options.get("captured_at_ms") or now_ms(),
            "max_age_ms": message.options.get("max_age_ms") or self.default_max_age_ms,
        }
        image_data = frame.get("image_data", "")
        claim_check = bool(image_data) and (len(targets) + len(unserved) > 1 or len(image_data) > INLINE_IMAGE_LIMIT)
        pipe = broker.client.pipeline(transaction=False)
        if claim_check:
            key = image_key(broker.namespace, frame_id)
            pipe.set(key, image_data, px=int(self.image_ttl_s * 1000))
            frame.pop("image_data")
            frame[IMAGE_REF_FIELD] = key
        script = broker.scripts["enqueue_bounded"]
        for info in targets:
            served = [capability for capability in capabilities if capability in info.capabilities]
            copy = message.copy(
                queue_name=info.queue_name,
                actor_name=info.actor_name,
                args=(frame,),
                # Each copy names only what its processor serves, so re-routing it
                # (its processor died) never duplicates work other processors have.
                options={**options, "capabilities": served, "processor": info.processor_id},
            )
            fields = encode_message(copy)
            keys = broker.keys_for(info.queue_name)
            flat = [item for pair in fields.items() for item in pair]
            script(keys=list(keys), args=[info.queue_bound, info.overflow, *flat], client=pipe)
        reason = None
        for capability in unserved:
            reason = f"no live processor for capability {capability!r}"
            copy = message.copy(args=(frame,), options={**options, "capabilities": [capability]})
            fields = {**encode_message(copy), "parked_reason": reason.encode()}
            pipe.xadd(parked_key(broker.namespace, capability), fields)  # type: ignore[arg-type]
        replies = pipe.execute()
        dropped = sum(1 for reply in replies[int(claim_check) : int(claim_check) + len(targets)] if reply is None)
        with self._lock:
            for info in targets:
                self._load[info.processor_id] = self._load.get(info.processor_id, 0.0) + 1 / max(1, info.capacity)
        if unserved:
            logger.info("Frame %s parked: %s.", frame_id, reason)
        return RoutingDecision(
            frame_id=frame_id,
            targets=tuple(info.processor_id for info in targets),
            parked=tuple(unserved),
            reason=reason,
            dropped=dropped,
        )

    def _choose(
        self,
        broker: RedisStreamsBroker,
        capabilities: list[str],
        processors: list[ProcessorInfo],
        load: dict[str, float],
    ) -> tuple[list[ProcessorInfo], list[str]]:
        chosen: list[ProcessorInfo] = []
        unserved: list[str] = []
        for capability in dict.fromkeys(capabilities):
            if any(capability in info.capabilities for info in chosen):
                continue  # a processor already chosen serves this one too: it gets the frame once
            candidates = [
                info
                for info in processors
                if capability in info.capabilities and not info.draining and self._admits(broker, info)
            ]
            if not candidates:
                unserved.append(capability)
                continue
            best = min(
                candidates,
                key=lambda info: (load.get(info.processor_id, 0.0), -_covers(info, capabilities), info.processor_id),
            )
            chosen.append(best)
        return chosen, unserved

    def _admits(self, broker: RedisStreamsBroker, info: ProcessorInfo) -> bool:
        """Closed breakers admit everything; an open one admits a single probe after the cool-down."""
        if info.breaker != BREAKER_OPEN:
            return True
        if time.time() - info.breaker_since < self.breaker_cooldown_s:
            return False
        won = broker.client.set(
            probe_key(broker.namespace, info.processor_id), "1", nx=True, px=int(self.breaker_cooldown_s * 1000)
        )
        return bool(won)

    # -- parked frames --------------------------------------------------------------------
    def release_parked(self, broker: RedisStreamsBroker, capabilities: list[str]) -> tuple[int, int]:
        """Route frames parked for ``capabilities``; frames past their max age are dropped
        and counted as stale. Returns (routed, dropped)."""
        self.invalidate()
        routed = dropped = 0
        for capability in capabilities:
            key = parked_key(broker.namespace, capability)
            for entry_id, fields in broker.client.xrange(key, count=1000):
                message = _decode_parked(fields)
                if message is None or is_stale(message.options):
                    dropped += 1
                    broker.client.hincrby(f"{broker.namespace}:drops:parked", "stale", 1)
                else:
                    decision = self.route_message(broker, message)
                    routed += 1 if decision.targets else 0
                broker.client.xdel(key, entry_id)
        return routed, dropped


def _covers(info: ProcessorInfo, capabilities: list[str]) -> int:
    return sum(1 for capability in capabilities if capability in info.capabilities)


def _backlog_and_in_flight(length: Any, groups: Any) -> tuple[int, int]:
    """Lag (entries not yet taken) and pending of the ``workers`` group; a queue never read yet is all backlog."""
    if not isinstance(length, int):
        return 0, 0
    if not isinstance(groups, list):
        return length, 0
    for group in groups:
        name = group.get("name")
        if name in (b"workers", "workers"):
            pending = int(group.get("pending") or 0)
            lag = group.get("lag")
            backlog = int(lag) if lag is not None else max(0, length - pending)
            return backlog, pending
    return length, 0


def _decode_parked(fields: dict[bytes, bytes]) -> dramatiq.Message | None:
    cleaned = {name: value for name, value in fields.items() if name != b"parked_reason"}
    try:
        return decode_entry(cleaned)
    except MalformedEntry:
        return None
