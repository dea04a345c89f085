r"""What became of each routed frame: the router's plans, its decisions, and the copies the bounds dropped.

A plan remembers which replies of the routing round trip say whether each copy
got where it was sent; :func:`decisions` reads them into :class:`RoutingDecision`\ s
(``FrameProducer.publish``'s return value, and the ``routed_to``/``parked``/``dropped``
options of a routed ``actor.send``). :func:`settle_drops` releases the claim-checked
image references of copies a queue bound or a parked bound dropped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline.domain.claim_check import release_commands, run_commands
from pipeline.domain.keys import parked_drops_key
from pipeline.domain.registry import ProcessorInfo

if TYPE_CHECKING:
    from pipeline.streams.broker import RedisStreamsBroker

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RoutingDecision:
    """Where one frame went: processor ids, and the reason for capabilities left unserved."""

    frame_id: str
    targets: tuple[str, ...]
    parked: tuple[str, ...] = ()
    reason: str | None = None
    dropped: int = 0

    def as_options(self) -> dict[str, Any]:
        """The options a routed message carries after its enqueue (read by tracing and metrics)."""
        return {"routed_to": list(self.targets), "parked": list(self.parked), "dropped": self.dropped}


@dataclasses.dataclass
class RoutePlan:
    """One frame of a routed batch: where it goes, and which replies say whether it got there."""

    frame_id: str
    targets: list[ProcessorInfo]
    unserved: list[str]
    reason: str | None = None
    image_ref: str | None = None
    enqueue_replies: list[int] = dataclasses.field(default_factory=list)
    park_replies: list[int] = dataclasses.field(default_factory=list)


def settle_drops(broker: RedisStreamsBroker, plans: list[RoutePlan], replies: Sequence[Any]) -> None:
    """Release the image references of the copies the bounds dropped (the queues' oldest, a
    rejected newest, the parked streams' oldest) and count the parked drops, in one round trip."""
    refs: list[bytes | str] = []
    overflow = 0
    for plan in plans:
        for index in plan.enqueue_replies:
            if not accepted(replies[index]) and plan.image_ref:
                refs.append(plan.image_ref)  # rejected: this copy was never stored
            refs += replies[index][1:] if isinstance(replies[index], list) else []
        for index in plan.park_replies:
            overflow += int(replies[index][1])
            refs += replies[index][2:]
    commands = release_commands(broker, refs)
    if overflow:
        commands.append(("HINCRBY", parked_drops_key(broker.namespace), "overflow", overflow))
    run_commands(broker, commands)


def accepted(reply: Any) -> bool:
    """Whether an enqueue's reply (``XADD``'s id, or ``enqueue_bounded``'s list) says the copy was stored."""
    return reply[0] is not None if isinstance(reply, list) else reply is not None


def decisions(plans: list[RoutePlan], replies: Sequence[Any]) -> list[RoutingDecision]:
    decisions = []
    for plan in plans:
        dropped = sum(1 for index in plan.enqueue_replies if not accepted(replies[index]))
        if plan.unserved:
            logger.info("Frame %s parked: %s.", plan.frame_id, plan.reason)
        decisions.append(
            RoutingDecision(
                frame_id=plan.frame_id,
                targets=tuple(info.processor_id for info in plan.targets),
                parked=tuple(plan.unserved),
                reason=plan.reason,
                dropped=dropped,
            )
        )
    return decisions
