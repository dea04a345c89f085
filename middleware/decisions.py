r"""What became of each routed frame: the router's plans, its decisions, and the copies the bounds dropped.

A plan remembers which replies of the routing round trip say whether each copy
got where it was sent; :func:`decisions` reads them into :class:`RoutingDecision`\ s
(``FrameProducer.publish``'s return value, and the ``routed_to``/``parked``/``dropped``
options of a routed ``actor.send``). :func:`settle_drops` releases the claim-checked
image references of copies a queue bound or a parked bound dropped, or Redis refused.

Redis may refuse some writes of a round trip and not others (a queue key of the wrong
type, out of memory): each frame's decision says what landed (``targets``, ``parked``)
and, in ``refused``, why the rest did not, so one refused frame never hides the
outcome of the others of its batch.
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
    """Where one frame went: processor ids, the reason for capabilities left unserved, and what Redis refused."""

    frame_id: str
    targets: tuple[str, ...]
    parked: tuple[str, ...] = ()
    reason: str | None = None
    dropped: int = 0
    #: Redis's error reply to a write of this frame it refused (the first one); ``targets`` and
    #: ``parked`` list only the copies that landed. ``None``: every write landed.
    refused: str | None = None
    #: That error itself, for callers that raise it (:meth:`refusal`).
    error: Exception | None = dataclasses.field(default=None, compare=False, repr=False)

    def as_options(self) -> dict[str, Any]:
        """The options a routed message carries after its enqueue (read by tracing and metrics)."""
        options: dict[str, Any] = {"routed_to": list(self.targets), "parked": list(self.parked)}
        options["dropped"] = self.dropped
        if self.refused is not None:
            options["refused"] = self.refused
        return options

    def refusal(self) -> Exception | None:
        """The error Redis answered to a write of this frame, if it refused one."""
        return self.error


@dataclasses.dataclass
class RoutePlan:
    """One frame of a routed batch: where it goes, and which replies say whether it got there."""

    frame_id: str
    targets: list[ProcessorInfo]
    unserved: list[str]
    reason: str | None = None
    image_ref: str | None = None
    #: Replies of the writes that are not copies (the stored image and its count).
    store_replies: tuple[int, ...] = ()
    enqueue_replies: list[int] = dataclasses.field(default_factory=list)
    park_replies: list[int] = dataclasses.field(default_factory=list)


def settle_drops(broker: RedisStreamsBroker, plans: list[RoutePlan], replies: Sequence[Any]) -> None:
    """Release the image references of the copies the bounds dropped (the queues' oldest, a
    rejected newest, the parked streams' oldest) or Redis refused, and count the parked drops,
    in one round trip."""
    refs: list[bytes | str] = []
    overflow = 0
    for plan in plans:
        for index in plan.enqueue_replies:
            reply = replies[index]
            if (isinstance(reply, Exception) or not accepted(reply)) and plan.image_ref:
                refs.append(plan.image_ref)  # rejected or refused: this copy was never stored
            refs += reply[1:] if isinstance(reply, list) else []
        for index in plan.park_replies:
            reply = replies[index]
            if isinstance(reply, Exception):
                refs += [plan.image_ref] if plan.image_ref else []
                continue
            overflow += int(reply[1])
            refs += reply[2:]
    commands = release_commands(broker, refs)
    if overflow:
        commands.append(("HINCRBY", parked_drops_key(broker.namespace), "overflow", overflow))
    run_commands(broker, commands)


def accepted(reply: Any) -> bool:
    """Whether an enqueue's reply (``XADD``'s id, or ``enqueue_bounded``'s list) says the copy was stored."""
    return reply[0] is not None if isinstance(reply, list) else reply is not None


def decisions(plans: list[RoutePlan], replies: Sequence[Any]) -> list[RoutingDecision]:
    refusals = any(isinstance(reply, Exception) for reply in replies)
    decisions = [_refused(plan, replies) if refusals else _landed(plan, replies) for plan in plans]
    if refusals:
        _log_refusals(decisions, replies)
    return decisions


def _landed(plan: RoutePlan, replies: Sequence[Any]) -> RoutingDecision:
    """The decision for a frame of a round trip in which every write landed (the usual case)."""
    if plan.unserved:
        logger.info("Frame %s parked: %s.", plan.frame_id, plan.reason)
    return RoutingDecision(
        frame_id=plan.frame_id,
        targets=tuple(info.processor_id for info in plan.targets),
        parked=tuple(plan.unserved),
        reason=plan.reason,
        dropped=sum(1 for index in plan.enqueue_replies if not accepted(replies[index])),
    )


def _refused(plan: RoutePlan, replies: Sequence[Any]) -> RoutingDecision:
    """The decision for a frame of a round trip in which Redis refused some writes: only the copies
    that landed, and the first refusal of this frame's writes if there is one."""
    written = (*plan.store_replies, *plan.enqueue_replies, *plan.park_replies)
    error = next((replies[index] for index in written if isinstance(replies[index], Exception)), None)
    if error is None:
        return _landed(plan, replies)
    landed = [not isinstance(replies[index], Exception) for index in plan.enqueue_replies]
    parked = [not isinstance(replies[index], Exception) for index in plan.park_replies]
    if any(parked):
        logger.info("Frame %s parked: %s.", plan.frame_id, plan.reason)
    return RoutingDecision(
        frame_id=plan.frame_id,
        targets=tuple(info.processor_id for info, ok in zip(plan.targets, landed, strict=True) if ok),
        parked=tuple(capability for capability, ok in zip(plan.unserved, parked, strict=True) if ok),
        reason=plan.reason,
        dropped=sum(
            1 for index, ok in zip(plan.enqueue_replies, landed, strict=True) if ok and not accepted(replies[index])
        ),
        refused=" ".join(str(error).split()),
        error=error,
    )


def _log_refusals(decisions: list[RoutingDecision], replies: Sequence[Any]) -> None:
    """One line for a routing round trip in which Redis refused writes, not one per frame."""
    refused = [decision for decision in decisions if decision.refused]
    if refused:
        logger.error(
            "Redis refused writes of %d of %d frame(s) (the first: %s): %s",
            len(refused),
            len(decisions),
            refused[0].frame_id,
            refused[0].refused,
        )
        return
    error = next(reply for reply in replies if isinstance(reply, Exception))  # a count: the frames all landed
    logger.warning("Redis refused to count routed frames: %s", " ".join(str(error).split()))
