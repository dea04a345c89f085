"""The orchestrator: routes every frame to per-processor queues by capability.

For each capability a frame needs, the router picks the live processor with
the lowest real load, ``(backlog + in flight) / capacity``, where backlog is
the processor queue's consumer-group lag (entries no consumer has taken) and
in flight is its pending count; for processors that declare camera affinity, the
frame's camera decides instead (:mod:`middleware.affinity`). A processor that offers several of the needed
capabilities receives the frame once. Processors that are draining or whose
breaker is open are skipped (one half-open probe is let through after the
cool-down). With no live processor for a capability, the frame is parked
with the reason and routed when a capable processor registers; a parked
stream keeps ``FRAMEFLOW_PARKED_BOUND`` frames per capability, its oldest
dropped and counted (``overflow``) beyond that.

A frame's image travels raw, in its own field. A frame for one processor carries it
inline whatever its size (up to the producers' maximum): storing it aside would only add
round trips. A frame that fans out (or is parked: a parked image must not outlive its
frame's freshness) has its image claim-checked when it is larger than ``claim_check_above``
(:data:`CLAIM_CHECK_ABOVE`, measured in ``benchmarks/claim_check.py``): stored once with a
count of the copies that need it (:mod:`pipeline.domain.claim_check`); copies the queue bound
or the parked bound drop release their references in a second round trip, taken only when
some were dropped.

Routing costs no Redis round trip per frame: the registry and queue loads are
cached for ``refresh_s`` and the router adds what it routed since the last
refresh to its load estimate. Nor does it cost a scan of every processor: the
choice is made in an index kept as frames are routed (:mod:`middleware.route_index`),
and a refresh reads the registry's entries again only when they changed
(:mod:`pipeline.domain.registry_view`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dramatiq
import redis
from dramatiq.middleware import Middleware

from pipeline.domain.claim_check import release_commands, release_images, store_commands
from pipeline.domain.frames import FRAME_OPTION, IMAGE_FIELD, IMAGE_REF_FIELD, now_ms, take_raw_image
from pipeline.domain.keys import (
    base64_image_key,
    counts_key,
    image_key,
    parked_counts_key,
    parked_key,
    probe_key,
)
from pipeline.domain.lua import domain_scripts
from pipeline.domain.registry import BREAKER_OPEN, ProcessorInfo, ProcessorRegistry
from pipeline.domain.registry_view import RegistryView
from pipeline.settings import Settings
from pipeline.streams.dispatch import Dispatcher
from pipeline.streams.wire import encode_flat

from .affinity import camera_instance, first_open, wants_camera_affinity
from .decisions import RoutePlan, RoutingDecision, decisions, settle_drops
from .load import measure_load
from .parking import parked_reason, release_parked
from .route_index import RouteIndex

if TYPE_CHECKING:
    from pipeline.streams.broker import RedisStreamsBroker

logger = logging.getLogger(__name__)

#: A frame that fans out or is parked has its image claim-checked (stored once) when it is larger than
#: this many bytes; below it each copy carries the image inline. A frame for one processor always carries
#: it inline. The crossover measured by ``benchmarks/claim_check.py`` (docs/architecture.md, Decisions).
CLAIM_CHECK_ABOVE = 64 * 1024

#: How long a claim-checked image outlives its frame's max age: the clocks of hosts differ a little.
IMAGE_GRACE_MS = 1000


class CapabilityRouter(Middleware, Dispatcher["RedisStreamsBroker"]):
    """Routes frame messages (option ``capabilities``) to processor queues: the broker's dispatcher.

    Added to a :class:`~pipeline.streams.broker.RedisStreamsBroker`, it claims every message
    that asks for capabilities (its own option, else its actor's) and is not already a routed
    copy (option ``processor``: a retry goes back to its processor's queue), so ``actor.send``
    and ``FrameProducer.publish`` pass through :meth:`dispatch` alike.

    Parameters:
      refresh_s: how long the cached registry and loads are trusted.
      breaker_cooldown_s: how long an open breaker waits before one probe frame.
      image_ttl_s: how long a claim-checked image is kept at most (never past its frame's max age).
      default_max_age_ms: a frame's max age when it does not say.
      parked_bound: frames kept per parked stream (0: unbounded); default ``FRAMEFLOW_PARKED_BOUND``.
      claim_check_above: images larger than this (bytes) are stored once when a frame fans out or is
        parked (:data:`CLAIM_CHECK_ABOVE`); 0 stores every such image.
    """

    def __init__(
        self,
        *,
        refresh_s: float = 0.5,
        breaker_cooldown_s: float = 5.0,
        image_ttl_s: float = 60.0,
        default_max_age_ms: int = 5000,
        parked_bound: int | None = None,
        claim_check_above: int = CLAIM_CHECK_ABOVE,
    ) -> None:
        self.refresh_s = refresh_s
        self.claim_check_above = claim_check_above
        self.breaker_cooldown_s = breaker_cooldown_s
        self.image_ttl_s = image_ttl_s
        self.default_max_age_ms = default_max_age_ms
        self.parked_bound = Settings.from_env().parked_bound if parked_bound is None else parked_bound
        self._lock = threading.Lock()
        self._view: RegistryView | None = None
        self._index: RouteIndex | None = None
        self._refreshed_at = 0.0

    @property
    def actor_options(self) -> set[str]:
        return {"capabilities", "max_age_ms"}

    # -- the cache ------------------------------------------------------------------------
    def invalidate(self) -> None:
        """Read the registry's every entry and the loads again before the next frame."""
        with self._lock:
            self._refreshed_at = 0.0
            view = self._view
        if view is not None:
            view.forget()

    def _snapshot(self, broker: RedisStreamsBroker) -> RouteIndex:
        with self._lock:
            if self._index is not None and time.monotonic() - self._refreshed_at < self.refresh_s:
                return self._index
            view = self._view
            if view is None or view.registry.client is not broker.client:
                view = self._view = RegistryView(ProcessorRegistry(broker.client, broker.namespace))
        processors = view.live()
        load = measure_load(broker, processors)
        with self._lock:
            if self._index is None or self._index.processors is not processors:
                self._index = RouteIndex(processors)  # the registry changed: sort its processors out again
            self._index.measured(load)
            self._refreshed_at = time.monotonic()
            return self._index

    # -- the broker's dispatcher (pipeline/streams/dispatch.py) ---------------------------------
    def attached(self, broker: RedisStreamsBroker) -> None:
        broker.add_scripts(domain_scripts(broker.client))

    def claim(self, broker: RedisStreamsBroker, message: dramatiq.Message) -> dramatiq.Message | None:
        """The frame to route for ``message``, if it asks for capabilities and is not a routed copy."""
        if "processor" in message.options:
            return None
        capabilities = message.options.get("capabilities")
        if not capabilities and message.actor_name in broker.actors:
            capabilities = broker.actors[message.actor_name].options.get("capabilities")
        if not capabilities:
            return None
        return message.copy(
            options={"capabilities": [capabilities] if isinstance(capabilities, str) else list(capabilities)}
        )

    def dispatch(self, broker: RedisStreamsBroker, messages: Sequence[dramatiq.Message]) -> list[RoutingDecision]:
        return self.route_many(broker, messages)

    def release(self, broker: RedisStreamsBroker, references: Sequence[bytes]) -> None:
        release_images(broker, references)

    # -- routing --------------------------------------------------------------------------
    def route_message(self, broker: RedisStreamsBroker, message: dramatiq.Message) -> RoutingDecision:
        """Send ``message`` (a frame) to the processors that serve its capabilities."""
        return self.route_many(broker, [message])[0]

    def route_many(self, broker: RedisStreamsBroker, messages: Sequence[dramatiq.Message]) -> list[RoutingDecision]:
        """Route frames in one round trip: every copy, stored image and count of all of them
        in one pipeline. Frames are balanced as if routed one by one (each adds to its
        processors' load estimate before the next is placed). A write Redis refuses fails only
        its own frame: that frame's decision says so (``refused``), the others' are as usual."""
        plans, commands = self._commands(broker, messages)
        replies = broker.writes.execute_many(commands, scripts=broker.scripts_by_sha)  # confirmed when durable
        settle_drops(broker, plans, replies)
        return decisions(plans, replies)

    def move(
        self,
        broker: RedisStreamsBroker,
        stream: str,
        entry_id: bytes,
        message: dramatiq.Message,
        fields: dict[bytes, bytes],
    ) -> RoutingDecision | None:
        """Route the frame waiting as ``entry_id`` on ``stream`` (parked, or queued for a dead
        processor; ``message`` is its decoded ``fields``) and delete that entry, exactly once.

        On one Redis both happen in one MULTI/EXEC under a WATCH of ``stream``: a process
        killed half-way leaves the frame where it was, and of two processes moving the same
        entry one wins, the other finds it gone. Returns ``None`` when it is gone. (A Redis
        Cluster cannot do a transaction across slots: there the frame is routed, then the
        entry deleted, so a crash in between routes it twice; never loses it.)
        """
        if not isinstance(broker.client, redis.Redis):
            decision = self.route_message(broker, message)
            broker.client.xdel(stream, entry_id)
            return decision
        scripts = {sha: script.script for sha, script in broker.scripts_by_sha.items()}
        while True:
            with broker.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(stream)
                    if not pipe.xrange(stream, entry_id, entry_id):
                        return None
                    plans, commands = self._commands(broker, [message])
                    pipe.multi()
                    for command in commands:  # EVAL, not EVALSHA: a NOSCRIPT inside EXEC would lose the frame
                        pipe.execute_command(*_inlined(command, scripts))
                    pipe.xdel(stream, entry_id)
                    replies = pipe.execute(raise_on_error=False)
                except redis.WatchError:
                    continue  # the stream changed under us: look again
            failed = [reply for reply in replies if isinstance(reply, Exception)]
            if failed:  # the entry is deleted but a copy was refused (out of memory...): put it back
                broker.client.xadd(stream, fields)  # type: ignore[arg-type]
                raise failed[0]
            settle_drops(broker, plans, replies)
            return decisions(plans, replies)[0]

    def _commands(
        self, broker: RedisStreamsBroker, messages: Sequence[dramatiq.Message]
    ) -> tuple[list[RoutePlan], list[tuple[Any, ...]]]:
        """The plans for ``messages`` and the commands that carry them out, with their counts."""
        index = self._snapshot(broker)
        commands: list[tuple[Any, ...]] = []
        plans = [self._plan(broker, message, index, commands) for message in messages]
        routed: Counter[str] = Counter(info.queue_name for plan in plans for info in plan.targets)
        parked: Counter[str] = Counter(capability for plan in plans for capability in plan.unserved)
        # Counted for the scheduler's /metrics, in the same round trip.
        commands += [("HINCRBY", counts_key(broker.namespace, name), "routed", n) for name, n in routed.items()]
        commands += [("HINCRBY", parked_counts_key(broker.namespace), name, n) for name, n in parked.items()]
        return plans, commands

    def _plan(
        self,
        broker: RedisStreamsBroker,
        message: dramatiq.Message,
        index: RouteIndex,
        commands: list[tuple[Any, ...]],
    ) -> RoutePlan:
        """Choose where one frame goes and append the commands that put it there."""
        capabilities = list(message.options.get("capabilities") or ())
        frame = dict(message.args[0]) if message.args and isinstance(message.args[0], dict) else {}
        frame_id = frame.get("frame_id") or message.message_id
        targets, unserved = self._choose(broker, capabilities, index, str(frame.get("camera_id") or ""))
        options = {
            FRAME_OPTION: True,
            "captured_at_ms": message.options.get("captured_at_ms") or now_ms(),
            "max_age_ms": message.options.get("max_age_ms") or self.default_max_age_ms,
        }
        plan = RoutePlan(frame_id, targets, unserved)
        copies = len(targets) + len(unserved)
        image = take_raw_image(frame)
        if image is not None and (copies > 1 or unserved) and len(image) > self.claim_check_above:
            ttl_ms = self._image_ttl_ms(options)
            plan.store_replies = (len(commands), len(commands) + 1)
            commands += store_commands(broker.namespace, frame_id, image, copies, ttl_ms)
            frame[IMAGE_REF_FIELD] = plan.image_ref = image_key(broker.namespace, frame_id)
        elif image is not None:
            frame[IMAGE_FIELD] = image
        elif frame.get(IMAGE_REF_FIELD) in (
            image_key(broker.namespace, frame_id),
            base64_image_key(broker.namespace, frame_id),
        ):
            plan.image_ref = frame[IMAGE_REF_FIELD]  # re-routed: its one reference becomes `copies`
            commands += release_commands(broker, [plan.image_ref], each=1 - copies) if copies != 1 else []
        script = broker.scripts["enqueue_bounded"]
        for info in targets:
            served = [capability for capability in capabilities if capability in info.capabilities]
            fields = encode_flat(
                message,
                frame,
                queue_name=info.queue_name,
                actor_name=info.actor_name,
                # Each copy names only what its processor serves, so re-routing it
                # (its processor died) never duplicates work other processors have.
                options={**message.options, **options, "capabilities": served, "processor": info.processor_id},
            )
            keys = broker.keys_for(info.queue_name)
            flat = _flatten(fields)
            plan.enqueue_replies.append(len(commands))
            if info.queue_bound > 0:
                commands.append(("EVALSHA", script.sha, len(keys), *keys, info.queue_bound, info.overflow, *flat))
            else:
                commands.append(("XADD", keys.stream, "*", *flat))  # unbounded: nothing to check first
        for capability in unserved:
            plan.reason = parked_reason(capability)
            fields = encode_flat(message, frame, options={**message.options, **options, "capabilities": [capability]})
            fields["parked_reason"] = plan.reason.encode()
            plan.park_replies.append(len(commands))
            parked = parked_key(broker.namespace, capability)
            park = broker.scripts["park_bounded"]
            commands.append(("EVALSHA", park.sha, 1, parked, self.parked_bound, *_flatten(fields)))
        return plan

    def _image_ttl_ms(self, options: dict[str, Any]) -> int:
        """A claim-checked image outlives its frame's freshness by :data:`IMAGE_GRACE_MS` and no more:
        a stale frame is skipped unread, and under overload images kept longer would fill Redis
        at the producers' rate, whatever the queue bounds."""
        life_ms = int(options["captured_at_ms"]) + int(options["max_age_ms"]) - now_ms()
        return max(1, min(int(self.image_ttl_s * 1000), life_ms + IMAGE_GRACE_MS))

    def _choose(
        self, broker: RedisStreamsBroker, capabilities: list[str], index: RouteIndex, camera_id: str = ""
    ) -> tuple[list[ProcessorInfo], list[str]]:
        """Where a frame needing ``capabilities`` goes (each target's load grows by the frame), and
        the capabilities nobody serves."""
        chosen: list[ProcessorInfo] = []
        unserved: list[str] = []
        for capability in dict.fromkeys(capabilities):
            if any(capability in info.capabilities for info in chosen):
                continue  # a processor already chosen serves this one too: it gets the frame once
            probes = [info for info in index.tripped(capability) if self._admits(broker, info)]
            with self._lock:
                best = self._best(index, capability, capabilities, probes, camera_id)
                if best is not None:
                    index.routed(best)
            if best is None:
                unserved.append(capability)
            else:
                chosen.append(best)
        return chosen, unserved

    @staticmethod
    def _best(
        index: RouteIndex, capability: str, capabilities: list[str], probes: list[ProcessorInfo], camera_id: str
    ) -> ProcessorInfo | None:
        """The least-loaded candidate of ``capability`` or, for camera-affine processors, the camera's."""
        routable = index.routable(capability)
        affine = index.affine(capability) or wants_camera_affinity(probes)
        if affine and camera_id and len(routable) + len(probes) > 1:
            if probes:  # a probe is let through: rank it with the others, this once
                return camera_instance(camera_id, [*routable, *probes], index.load)
            return first_open(index.ranking(capability, camera_id), index.load)
        return index.least_loaded(capability, capabilities, probes)

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

    # -- parked frames (middleware/parking.py) ---------------------------------------------
    def release_parked(self, broker: RedisStreamsBroker, capabilities: list[str]) -> tuple[int, int]:
        """Route frames parked for ``capabilities`` (:func:`middleware.parking.release_parked`)."""
        return release_parked(self.move, self.invalidate, broker, capabilities)


def _inlined(command: tuple[Any, ...], scripts: dict[str, str]) -> tuple[Any, ...]:
    """``command`` with an ``EVALSHA`` of one of ``scripts`` turned into an ``EVAL`` of its source."""
    if command[0] == "EVALSHA":
        return ("EVAL", scripts[command[1]], *command[2:])
    return command


def _flatten(fields: dict[str, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]


def router_of(broker: RedisStreamsBroker) -> CapabilityRouter | None:
    """``broker``'s routing middleware, when its dispatcher is one."""
    dispatcher = broker.dispatcher
    return dispatcher if isinstance(dispatcher, CapabilityRouter) else None
