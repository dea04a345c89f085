"""``FrameProducer``: how cameras publish frames.

``publish`` validates the frame, then hands it to the broker's one entrance for
routed messages, where the routing middleware decides where it goes (one
processor per needed capability, least loaded first) and writes it there in
one round trip. The result says where it went, or why not.
``publish_many`` does the same for many frames with one round trip per chunk.
Each camera's newest frame is kept as its preview about once a second (:mod:`.previews`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import dramatiq
import redis

from middleware.routing import CapabilityRouter, RoutingDecision
from middleware.tracing import MAX_OPEN_SENDS, Tracing
from pipeline.domain.frames import FRAME_OPTION, MAX_FRAME_ID_CHARS, Frame, FrameRejected, frame_size_limit
from pipeline.processes.previews import CameraPreviews
from pipeline.settings import Settings
from pipeline.streams.broker import RedisStreamsBroker
from pipeline.streams.connection import connect
from pipeline.streams.durability import Durability

#: The virtual queue a frame is addressed to before routing picks its processors.
FRAMES_QUEUE = "frames"

#: What a frame id kept from upstream may look like (it names keys and messages).
_FRAME_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_FRAME_ID_CHARS - 1}}}")

#: Frames ``publish_many`` writes per round trip: no more sends open at once than tracing keeps.
PUBLISH_CHUNK = MAX_OPEN_SENDS


class FrameProducer:
    """Publishes frames to the processors that can analyse them.

    Parameters:
      redis_url: defaults to ``REDIS_URL``; else localhost:6379 when it answers, else the shared embedded Redis.
      redis_client: an existing client instead.
      max_frame_bytes: images above this are refused (default ``FRAMEFLOW_MAX_FRAME_BYTES``, else 16 MiB);
        a limit that is not a positive integer is a ValueError here, not a surprise at the first frame.
      max_age_ms: how long a frame stays worth processing, unless ``publish`` says otherwise.
      durability: ``"primary"`` (default ``FRAMEFLOW_DURABILITY``, else this): ``publish`` returns once the
        primary wrote the frame; ``"replicated"``: once a replica confirmed it too, or raises
        :class:`~pipeline.errors.NotReplicated` (:mod:`pipeline.streams.durability`).
      replica_timeout_ms: how long a ``replicated`` publish waits for its replica (default
        ``FRAMEFLOW_REPLICA_TIMEOUT_MS``, else 1000).
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        redis_client: redis.Redis | None = None,
        max_frame_bytes: int | None = None,
        max_age_ms: int = 5000,
        durability: str | None = None,
        replica_timeout_ms: int | None = None,
    ) -> None:
        self.router = CapabilityRouter(default_max_age_ms=max_age_ms)
        client = redis_client or (connect(redis_url) if redis_url else None)
        self.broker = RedisStreamsBroker(
            client=client,
            middleware=[Tracing(), self.router],
            durability=Durability.chosen(durability, replica_timeout_ms),
        )
        self.max_frame_bytes = frame_size_limit(max_frame_bytes)
        self.max_age_ms = max_age_ms
        self.previews = CameraPreviews(
            self.broker.client, self.broker.namespace, Settings.from_env().preview_interval_s
        )

    def publish(
        self,
        *,
        camera_id: str,
        image: bytes,
        capabilities: Iterable[str],
        width: int,
        height: int,
        format: str = "jpeg",
        metadata: dict[str, Any] | None = None,
        timestamp: datetime | str | float | None = None,
        max_age_ms: int | None = None,
        frame_id: str | None = None,
        trace_context: Mapping[str, str] | None = None,
    ) -> RoutingDecision:
        """Publish one frame; returns its ``frame_id``, the processor ids it went to
        (``targets``) and, for capabilities no live processor serves, the ``reason``.

        ``frame_id`` keeps an id the frame already has (default: a new one); ``trace_context``
        (W3C ``traceparent``/``tracestate``) continues a trace begun upstream: the send span is
        its child, or, without tracing, the frame carries it unchanged to the processors.

        Raises:
          FrameRejected: the frame is invalid (empty image, unknown format, bad camera id, ...).
          NotReplicated: ``durability="replicated"`` and no replica confirmed the frame in time:
            it is on the primary, and a failover may lose it.
          redis.ResponseError: Redis refused a write of the frame (``publish_many`` reports it in
            the frame's decision instead); the copies that did land are processed.
        """
        message = self._frame_message(
            camera_id=camera_id,
            image=image,
            capabilities=capabilities,
            width=width,
            height=height,
            format=format,
            metadata=metadata,
            timestamp=timestamp,
            max_age_ms=max_age_ms,
            frame_id=frame_id,
            trace_context=trace_context,
        )
        decision = self._route([message])[0]
        refusal = decision.refusal()
        if refusal is not None:
            raise refusal
        return decision

    def publish_many(self, frames: Iterable[Mapping[str, Any]]) -> list[RoutingDecision]:
        """Publish many frames with few round trips; one decision per frame, in order.

        Each item holds :meth:`publish`'s keyword arguments. Every frame is validated
        before anything is sent, so one invalid frame rejects the whole batch. Frames are
        then routed as :meth:`publish` routes them (and traced the same way) and written
        :data:`PUBLISH_CHUNK` at a time, each chunk in one pipeline: when this returns,
        Redis holds every frame the decisions say it holds. A write Redis refuses (a queue
        key of the wrong type, out of memory) fails its own frame only: that frame's decision
        says why (``refused``) and lists only the copies that landed.

        Raises:
          FrameRejected: a frame is invalid; the message says which (its position) and why.
          NotReplicated: ``durability="replicated"`` and no replica confirmed a chunk in time; the
            chunks before it were confirmed, that one and the rest may be lost in a failover.
        """
        messages = []
        for index, spec in enumerate(frames):
            try:
                messages.append(self._frame_message(**spec))
            except (FrameRejected, TypeError) as error:  # TypeError: a missing or unknown argument
                raise FrameRejected(f"frame {index}: {error}") from None
        decisions: list[RoutingDecision] = []
        for start in range(0, len(messages), PUBLISH_CHUNK):
            decisions += self._route(messages[start : start + PUBLISH_CHUNK])
        return decisions

    def _route(self, messages: list[dramatiq.Message]) -> list[RoutingDecision]:
        """Route and write frames in one round trip, through the broker's one entrance for routed
        messages (``RedisStreamsBroker.dispatch``), as ``actor.send`` of a frame is: each send
        traced (its context goes into the frame's trace_context), its decision on its send span."""
        decisions = cast(list[RoutingDecision], self.broker.dispatch(messages))
        self.previews.keep(messages)  # each camera's newest frame, for the dashboard, once per interval
        return decisions

    def _frame_message(
        self,
        *,
        camera_id: str,
        image: bytes,
        capabilities: Iterable[str],
        width: int,
        height: int,
        format: str = "jpeg",
        metadata: dict[str, Any] | None = None,
        timestamp: datetime | str | float | None = None,
        max_age_ms: int | None = None,
        frame_id: str | None = None,
        trace_context: Mapping[str, str] | None = None,
    ) -> dramatiq.Message:
        """A validated frame as the message the router takes: whatever the arguments, either
        that or :class:`FrameRejected` saying which argument is wrong."""
        needed = [capabilities] if isinstance(capabilities, str) else capabilities
        if not isinstance(needed, list | tuple | set | frozenset) or not needed:
            raise FrameRejected("capabilities: name at least one capability the frame needs")
        needed = list(needed)
        if not all(isinstance(capability, str) and capability for capability in needed):
            raise FrameRejected("capabilities: name at least one capability the frame needs")
        if metadata is not None and not isinstance(metadata, dict):
            raise FrameRejected(f"metadata must be a dict, not {type(metadata).__name__}")
        if max_age_ms is not None and (
            not isinstance(max_age_ms, int) or isinstance(max_age_ms, bool) or max_age_ms < 1
        ):
            raise FrameRejected(f"bad max_age_ms {max_age_ms!r}: expected a positive number of milliseconds")
        identity = {} if frame_id is None else {"frame_id": _checked_frame_id(frame_id)}
        frame = Frame(
            camera_id=camera_id,
            image=image,
            width=width,
            height=height,
            format=format,
            metadata=metadata or {},
            timestamp=_as_datetime(timestamp),
            trace_context=_checked_trace_context(trace_context),
            **identity,
        ).validate(self.max_frame_bytes)
        message = dramatiq.Message(
            queue_name=FRAMES_QUEUE,
            actor_name="frame",
            args=(frame.fields(),),
            kwargs={},
            options={
                FRAME_OPTION: True,
                "capabilities": needed,
                "captured_at_ms": frame.captured_at_ms,
                "max_age_ms": max_age_ms or self.max_age_ms,
            },
            message_id=frame.frame_id,
        )
        return message

    def close(self) -> None:
        self.broker.close()


def _checked_frame_id(frame_id: Any) -> str:
    """A frame id kept from upstream: it names Redis keys and messages, so letters, digits and ``._:-`` only."""
    if not isinstance(frame_id, str) or not _FRAME_ID.fullmatch(frame_id):
        raise FrameRejected(
            f"bad frame_id {str(frame_id)[:40]!r}: use 1-{MAX_FRAME_ID_CHARS} letters, digits, '.', '_', ':' or '-'"
        )
    return frame_id


def _checked_trace_context(trace_context: Any) -> dict[str, str]:
    if trace_context is None:
        return {}
    if not isinstance(trace_context, Mapping) or not all(
        isinstance(name, str) and isinstance(value, str) for name, value in trace_context.items()
    ):
        raise FrameRejected("trace_context must map W3C header names to strings (traceparent, tracestate)")
    return dict(trace_context)


def _as_datetime(timestamp: datetime | str | float | None) -> datetime:
    """The capture time; anything that is not one is a FrameRejected (``nan``, ``1e300``, ``True``
    and ``[]`` used to escape as ValueError, OverflowError or OSError, or to pass as 1970)."""
    if timestamp is None:
        return datetime.now(UTC)
    if isinstance(timestamp, datetime):
        return timestamp
    bad = FrameRejected(f"bad timestamp {timestamp!r}: expected ISO-8601, epoch seconds or a datetime")
    if isinstance(timestamp, bool):
        raise bad
    if isinstance(timestamp, int | float):
        if not math.isfinite(timestamp):
            raise bad
        try:
            return datetime.fromtimestamp(timestamp, UTC)
        except (ValueError, OverflowError, OSError):
            raise bad from None
    try:
        parsed = datetime.fromisoformat(timestamp)
    except (TypeError, ValueError):
        raise bad from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
