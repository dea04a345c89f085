"""Frames go stale fast: a frame older than its max age is skipped, never processed late.

A frame message carries ``captured_at_ms`` and ``max_age_ms`` in its options
(the router sets them; a per-processor ``max_age_ms`` actor option tightens
them). Skipped frames are acknowledged, not retried, and counted under
``stale`` in the queue's drops hash so nothing disappears silently.

A copy skipped as stale releases its reference to its claim-checked image with its
ack (:mod:`pipeline.domain.claim_check`), as a processed one does in the processor's
ack (:mod:`pipeline.processes.frame_ack`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dramatiq.middleware import Middleware, SkipMessage
from opentelemetry import trace

from pipeline.domain.claim_check import image_ref_of, release_commands
from pipeline.domain.frames import FRAME_OPTION, is_stale
from pipeline.streams.consumer import StreamMessageProxy

if TYPE_CHECKING:
    import dramatiq

logger = logging.getLogger(__name__)


class FrameFreshness(Middleware):
    """Skips frame messages older than their max age (``SkipMessage``), counts them, and releases
    their image references with their acks."""

    @property
    def actor_options(self) -> set[str]:
        return {"max_age_ms"}

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        options = message.options
        if not options.get(FRAME_OPTION):
            return
        actor_max_age = _actor_max_age(broker, message.actor_name)
        if actor_max_age is not None:  # a copy, only then: the message's own options stay as they came
            options = {**options, "max_age_ms": min(int(options.get("max_age_ms") or actor_max_age), actor_max_age)}
        if is_stale(options):
            keys = getattr(broker, "keys_for", None)
            if keys is not None:
                broker.client.hincrby(keys(message.queue_name).drops, "stale", 1)  # type: ignore[attr-defined]
            logger.info("Skipping stale frame on %s (max age %s ms).", message.queue_name, options["max_age_ms"])
            # On the delivery's span, when tracing (a no-op otherwise): why this frame went no further.
            trace.get_current_span().add_event(
                "frame dropped", {"frameflow.reason": "stale", "frameflow.max_age_ms": int(options["max_age_ms"])}
            )
            # Skipped for good: the copy's claim-checked image reference goes with its ack.
            ref = image_ref_of(message)
            if ref is not None and isinstance(message, StreamMessageProxy):
                for command in release_commands(broker, [ref]):  # type: ignore[arg-type]
                    message.write_with_ack(*command)
            raise SkipMessage("stale frame")


def _actor_max_age(broker: dramatiq.Broker, actor_name: str) -> int | None:
    actor = broker.actors.get(actor_name)
    value = actor.options.get("max_age_ms") if actor is not None else None
    return int(value) if value else None
