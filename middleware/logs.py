"""Log lines written while a message is processed name its frame, camera, processor and trace.

The middleware binds the message to :mod:`pipeline.domain.log_context` for the time
its worker thread spends on it: the actor, the middleware around it (retries,
skips) and the worker's own "failed to process" line, and any coroutine the
actor awaits (``ProcessorClient``'s async ``process_frame``). One context
variable is set and reset per message; the fields are only worked out when a
line is actually logged.

Put it first in the broker's middleware list (:func:`middleware.add_observability`
does), so that its ``after_*`` hooks run last and lines the other middleware log
on the way out still carry the context.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from dramatiq.middleware import Middleware

from pipeline.domain import log_context

if TYPE_CHECKING:
    import dramatiq


class LogContext(Middleware):
    """Binds the message being processed to the log context of its worker thread."""

    def __init__(self) -> None:
        self._tokens = threading.local()

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        log_context.install()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._tokens.token = log_context.bind(message)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        self._reset()

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._reset()

    def _reset(self) -> None:
        token = getattr(self._tokens, "token", None)
        if token is not None:
            self._tokens.token = None
            log_context.reset(token)
