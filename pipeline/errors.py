"""The exceptions frameflow raises, in one hierarchy so callers catch meaning, not strings.

Broker-level connection failures are reported with Dramatiq's own
:class:`dramatiq.errors.ConnectionClosed`, because Dramatiq's worker knows how
to recover from that type (it restarts the consumer and retries acks).
"""

from __future__ import annotations

from typing import Any

from dramatiq.errors import DramatiqError
from dramatiq.middleware import SkipMessage


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


class RedisUnreachable(FrameflowError):
    """Redis did not answer (or refused the credentials); the message shows the URL with its password masked."""


class UnknownProcessor(FrameflowError, LookupError):
    """No processor with that id is registered."""


class UnknownQueue(FrameflowError, LookupError):
    """No queue of that name holds messages, delayed messages or dead letters."""


class SourceError(FrameflowError):
    """A frame source cannot be read: a missing path, an empty folder, a file that is not a video."""


class UnprocessableFrame(FrameflowError):
    """A frame no retry can help: its image cannot be decoded, a field it needs is missing.

    Raised by a processor for one frame (or returned for it from ``process_batch``), it
    dead-letters that frame at once with the reason, without retries, and does not count
    against the processor's circuit breaker: the frame is at fault, not the processor.
    """


class ImageDecodeError(UnprocessableFrame, ValueError):
    """A frame's image could not be decoded; the message names the frame, its format and the cause."""


class FrameRefused(UnprocessableFrame):
    """A frame refused before its processing began: by the processor's intake checks
    (:mod:`pipeline.processes.intake`) or its options guard (:class:`ForbiddenOption`).

    Dead-lettered at once like any :class:`UnprocessableFrame`, and counted as ``rejected``,
    never as ``failed``: the processor never worked on it.
    """

    @classmethod
    def of(cls, error: UnprocessableFrame) -> FrameRefused:
        """``error`` as a refusal, with its text."""
        return error if isinstance(error, FrameRefused) else cls(*error.args)


class ForbiddenOption(FrameRefused, SkipMessage):
    """A message on a processor queue carries an option with which Dramatiq would send another
    message (:mod:`middleware.processor_guard`). A :class:`~dramatiq.middleware.SkipMessage`, raised
    with the message failed, as Dramatiq's AgeLimit refuses one: no actor, callback, pipeline or
    retry runs, and the broker dead-letters it."""


class BatchFailed(FrameflowError):
    """``process_batch`` raised, or returned the wrong number of outcomes: each frame of that batch
    fails with this error (retried as usual), its ``__cause__`` being the original exception."""


class WeightsMissing(FrameflowError):
    """A processor's model weights are not where it looks; the message says what to run or set."""


class UnknownDeadLetter(FrameflowError, LookupError):
    """No dead letter with that entry id in the queue."""


class BadSetting(FrameflowError, ValueError):
    """An environment variable frameflow reads holds something it cannot use; the message names it."""


class ProcessorLoadError(FrameflowError):
    """``frameflow worker MODULE[:CLASS]`` names nothing that builds a processor."""


class EndpointUnavailable(FrameflowError, OSError):
    """A health or metrics endpoint cannot bind its address (the port is taken, or not ours to bind)."""


class RegistrationRefused(FrameflowError):
    """A processor tried to register under an id ``FRAMEFLOW_ALLOWED_PROCESSORS`` does not allow.

    Attributes:
      processor_id: the id it asked for.
      allowed: the allow-list's patterns.
    """

    def __init__(self, processor_id: str, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(
            f"processor {processor_id!r} may not register: FRAMEFLOW_ALLOWED_PROCESSORS allows only "
            f"{', '.join(allowed) or '(nothing)'}"
        )
        self.processor_id = processor_id
        self.allowed = tuple(allowed)


class ResultRefused(FrameflowError, ValueError):
    """``ProcessorClient.publish_result`` was given what cannot be a result entry (not a dict, no
    ``frame_id``, a value JSON cannot carry) or the processor has no ``result_stream``."""


class ConfigurationRefused(FrameflowError, ValueError):
    """``ProcessorClient.update_configuration`` was given a setting it does not know or a bad value;
    nothing was changed."""


class NotReplicated(FrameflowError):
    """A write that had to reach a replica (``durability="replicated"``, :mod:`pipeline.streams.durability`)
    was not confirmed by enough replicas within the replica timeout. It ran on the primary, so it is
    there now, but a failover before it reaches a replica may lose it: the caller decides whether to
    send it again (a duplicate at worst) or give it up.

    Attributes:
      replies: the replies of the commands that ran (on the primary), in order, when known.
    """

    def __init__(self, message: str, replies: list[Any] | None = None) -> None:
        super().__init__(message)
        self.replies = replies
