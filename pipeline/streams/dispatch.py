"""The broker's one extension point for where a message goes: a :class:`Dispatcher`.

Dramatiq's ``before_enqueue`` hook cannot redirect a message, and an orchestrator
must: a frame goes to the queues of the processors that serve it, not to the
queue it names. A middleware that is also a :class:`Dispatcher` takes that
decision for the broker it is added to (one per broker):

* for every message enqueued without a delay, the broker asks :meth:`Dispatcher.claim`
  whether the dispatcher takes it; what it declines goes to its own queue as usual;
* a claimed message goes through :meth:`RedisStreamsBroker.dispatch
  <pipeline.streams.broker.RedisStreamsBroker.dispatch>`, the one entrance for
  ``actor.send`` and for producers that publish many messages at once:
  ``before_enqueue`` for each message, :meth:`Dispatcher.dispatch` writes them all
  (in as few round trips as it can), each message's options take its
  :class:`Outcome`, ``after_enqueue`` for each, last message first (so that
  nested send spans close in order).

Entries a dispatcher writes may name a payload stored once for several entries in
their ``image_ref`` field (a claim check). When the broker removes such an entry
for good (a dead letter, a poison message), it hands the references to
:meth:`Dispatcher.release`: whoever wrote the references releases them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from dramatiq import Message

if TYPE_CHECKING:
    from .interface import BrokerCore

#: The broker a dispatcher works with (the broker core's :class:`~pipeline.streams.interface.BrokerCore`,
#: or a concrete broker class where the dispatcher needs more of it).
BrokerT = TypeVar("BrokerT", bound="BrokerCore")


class Outcome(Protocol):
    """What became of one dispatched message."""

    def as_options(self) -> dict[str, Any]:
        """The options that record the outcome on the message (``after_enqueue`` hooks read them)."""
        ...

    def refusal(self) -> Exception | None:
        """The error Redis answered to a write of the message, when it refused one (a batch reports
        it per message; ``enqueue`` of one message raises it)."""
        ...


class Dispatcher(abc.ABC, Generic[BrokerT]):
    """Decides where claimed messages go, and writes them there (see the module docstring)."""

    @abc.abstractmethod
    def claim(self, broker: BrokerT, message: Message) -> Message | None:
        """The message to dispatch in place of ``message`` (it may be a copy with more options),
        or None to let ``message`` go to its own queue."""

    @abc.abstractmethod
    def dispatch(self, broker: BrokerT, messages: Sequence[Message]) -> Sequence[Outcome]:
        """Write ``messages`` where they go; one outcome per message, in order."""

    def attached(self, broker: BrokerT) -> None:
        """Called once the broker it was added to is ready (its client and scripts exist)."""

    def release(self, broker: BrokerT, references: Sequence[bytes]) -> None:
        """Release the payload references of entries the broker removed for good."""
