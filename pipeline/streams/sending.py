"""How the broker sends: a message onto its queue's stream, into its delayed set, or to the dispatcher.

:class:`Sending` holds :meth:`~Sending.enqueue` (Dramatiq's ``actor.send`` ends there) and
:meth:`~Sending.dispatch` (the one entrance for messages a
:class:`~pipeline.streams.dispatch.Dispatcher` places), mixed into
:class:`~pipeline.streams.broker.RedisStreamsBroker`, whose state they use.

A send is the broker's hottest path after a fetch, so it is kept to what it must do:
one ``XADD`` in one round trip on the hot path's connections (:mod:`pipeline.streams.direct`),
confirmed by a replica when the broker's durability asks for it (its ``writes``), the
``enqueue`` hooks of the middleware that define them, and the envelope encoded once
(:func:`pipeline.streams.wire.entry_items`). Nothing is sent before it is acknowledged: a
send returns once Redis has the message, and a write Redis refused is raised
(:class:`dramatiq.errors.ConnectionClosed` for a connection that failed after its retries).
"""

from __future__ import annotations

import math
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dramatiq import Message
from dramatiq.errors import ConnectionClosed

from .connection import TRANSIENT_ERRORS, RedisClient
from .dispatch import Dispatcher, Outcome
from .keys import QueueKeys
from .wire import delayed_member, encode_message, entry_items

if TYPE_CHECKING:
    from .consumer import StreamConsumer
    from .direct import RoundTrips


class Sending:
    """The send path of :class:`~pipeline.streams.broker.RedisStreamsBroker` (see the module docstring)."""

    client: RedisClient
    writes: RoundTrips
    _consumers: dict[str, weakref.WeakSet[StreamConsumer]]

    @property
    def dispatcher(self) -> Dispatcher | None:
        """The middleware that decides where claimed messages go (:mod:`pipeline.streams.dispatch`), if any."""
        return self.__dict__.get("_dispatcher")

    if TYPE_CHECKING:  # the broker's

        def keys_for(self, queue_name: str) -> QueueKeys: ...

        def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None: ...

        def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None: ...

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        """Append ``message`` to its queue's stream, or, with ``delay`` (ms), park it in
        the queue's delayed set until it is due. A message the dispatcher claims goes
        through :meth:`dispatch` instead (returned with its outcome in its options; a write
        Redis refused is raised, as it is for an unclaimed message)."""
        if delay:
            return self._enqueue_delayed(message, delay)
        dispatcher = self.dispatcher
        if dispatcher is not None:
            claimed = dispatcher.claim(self, message)  # type: ignore[arg-type]
            if claimed is not None:
                refusal = self.dispatch([claimed])[0].refusal()
                if refusal is not None:
                    raise refusal  # as the write itself would have: the sender learns it
                return claimed
        stream = self.keys_for(message.queue_name).stream
        self.emit_before("enqueue", message, delay)
        items = entry_items(message)
        try:
            self.writes.execute("XADD", stream, "*", *items)
        except TRANSIENT_ERRORS as error:
            raise ConnectionClosed(error) from None
        self.emit_after("enqueue", message, delay)
        return message

    def _enqueue_delayed(self, message: Message, delay: int) -> Message:
        """Park ``message`` in its queue's delayed set, due in ``delay`` ms; this process's
        consumers of the queue look when it is due."""
        keys = self.keys_for(message.queue_name)
        self.emit_before("enqueue", message, delay)
        fields = encode_message(message)
        eta_ms = math.ceil(time.time() * 1000 + delay)  # never due before its delay (Redis compares whole ms)
        try:
            self.client.zadd(keys.delayed, {delayed_member(fields, uuid.uuid4().hex): eta_ms})
        except TRANSIENT_ERRORS as error:
            raise ConnectionClosed(error) from None
        for consumer in list(self._consumers.get(message.queue_name, ())):
            consumer.expect_due(eta_ms)
        self.emit_after("enqueue", message, delay)
        return message

    def dispatch(self, messages: Sequence[Message]) -> list[Outcome]:
        """The one entrance for messages the dispatcher places (:mod:`pipeline.streams.dispatch`):
        ``before_enqueue`` for each, the dispatcher writes them all, each message's options take
        its outcome, ``after_enqueue`` for each, last first. One outcome per message, in order.

        Raises:
          ValueError: the broker has no dispatcher.
        """
        dispatcher = self.dispatcher
        if dispatcher is None:
            raise ValueError(f"{self!r} has no dispatcher: add one (a routing middleware) to dispatch messages")
        for message in messages:
            self.emit_before("enqueue", message, None)
        outcomes = list(dispatcher.dispatch(self, messages))  # type: ignore[arg-type]
        for message, outcome in zip(reversed(messages), reversed(outcomes), strict=True):  # send spans nest
            message.options.update(outcome.as_options())
            self.emit_after("enqueue", message, None)
        return outcomes
