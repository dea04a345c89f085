"""A processor's acknowledgement of a frame, step by step, in one round trip.

When ``process_frame`` returned, :class:`~pipeline.processes.processor.ProcessorClient`
acknowledges the frame's queue entry with what must be written with it:

1. the result entry (``XADD`` to the processor's result stream, capped at about
   ``results_maxlen``: :func:`pipeline.domain.results.result_fields` flattened it), preceded,
   when the processor keeps images for snapshots, by the kept copy (:mod:`pipeline.domain.kept_images`);
2. the release of this copy's reference to the frame's claim-checked image
   (:mod:`pipeline.domain.claim_check`: the last copy to release it deletes it);
3. the ack itself (``XACK`` + ``XDEL``), which the queue's ack batcher writes right
   after those, for a whole batch of frames at once (:mod:`pipeline.streams.acks`).

The writes ride on the delivery's message (:meth:`~pipeline.streams.consumer.StreamMessageProxy.write_with_ack`):
a frame is acked only once its result is in Redis, and a delivery that raised writes
nothing (its retry writes its own). A frame skipped as stale releases its image the
same way, where :class:`~middleware.freshness.FrameFreshness` skips it.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Any

from pipeline.domain.claim_check import release_commands
from pipeline.domain.kept_images import SNAPSHOT_REF_FIELD, KeptImage
from pipeline.streams.broker import RedisStreamsBroker
from pipeline.streams.consumer import StreamMessageProxy


def acknowledge_frame(
    broker: RedisStreamsBroker,
    message: StreamMessageProxy,
    *,
    image_ref: str | None,
    result_stream: str | None = None,
    result: Mapping[str, Any] | None = None,
    results_maxlen: int = 0,
    kept_image: KeptImage | None = None,
) -> None:
    """Attach the frame's result entry and its image release to ``message``'s ack; with ``kept_image``,
    the copy of its image kept for snapshots too, named in the result."""
    if kept_image is not None and result is not None:
        for command in kept_image.commands:
            message.write_with_ack(*command)
        result = {**result, SNAPSHOT_REF_FIELD: kept_image.ref}
    if result is not None and result_stream:
        cap = ("MAXLEN", "~", results_maxlen) if results_maxlen > 0 else ()
        message.write_with_ack("XADD", result_stream, *cap, "*", *chain.from_iterable(result.items()))
    if image_ref:
        for command in release_commands(broker, [image_ref]):
            message.write_with_ack(*command)
