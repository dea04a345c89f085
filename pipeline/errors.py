"""The exceptions frameflow raises, in one hierarchy so callers catch meaning, not strings.

Broker-level connection failures are reported with Dramatiq's own
:class:`dramatiq.errors.ConnectionClosed`, because Dramatiq's worker knows how
to recover from that type (it restarts the consumer and retries acks).
"""

from __future__ import annotations

from dramatiq.errors import DramatiqError


class FrameflowError(DramatiqError):
    """Base class for every error frameflow raises on purpose."""


class InvalidQueueName(FrameflowError, ValueError):
    """A queue name does not follow Dramatiq's rules (``[a-zA-Z_][a-zA-Z0-9._-]*``)."""


class MalformedEntry(FrameflowError):
    """A stream entry could not be decoded into a Dramatiq message.

    The entry is dead-lettered with ``str(error)`` as its reason; the worker keeps running.
    """


class DeadLettered(FrameflowError):
    """Raised by ``join(fail_fast=True)`` for a message that was dead-lettered in
    another process, where the original exception object is not available.

    Attributes:
      reason: the reason stored with the dead letter (exception type and message).
      message_id: the Dramatiq message id.
    """

    def __init__(self, reason: str, message_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id


class EmbeddedRedisError(FrameflowError):
    """The embedded Redis server could not be started."""
