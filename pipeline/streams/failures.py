"""What ``join(fail_fast=True)`` re-raises: the failures of this process's messages.

The StubBroker re-raises a dead-lettered message's own exception from ``join``,
and Dramatiq's test suites rely on it. A Redis dead letter only keeps the
reason as text, so the broker remembers, per message id, a copy of the
exception of messages that failed in this process, and falls back to
:class:`~pipeline.errors.DeadLettered` (with the stored reason) for the rest.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from dramatiq import MessageProxy

from pipeline.errors import DeadLettered

from .dead_letters import DeadLetter

#: How many failures ``join(fail_fast=True)`` can re-raise with their original exception type and arguments.
REMEMBERED_FAILURES = 1000


def detach_exception(error: BaseException) -> BaseException | None:
    """A copy of ``error`` (same type, args and attributes) without its traceback,
    cause or context, made without calling ``__init__``; ``None`` if it cannot be copied."""
    try:
        copy = type(error).__new__(type(error), *error.args)
        copy.args = error.args
        copy.__dict__.update(getattr(error, "__dict__", {}))
    except Exception:
        return None
    return copy


class FailureMemory:
    """The last :data:`REMEMBERED_FAILURES` failures of this process, by message id (thread-safe)."""

    def __init__(self) -> None:
        self._failures: OrderedDict[str, BaseException] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, message_id: str, error: BaseException) -> None:
        """Keep a detached copy of ``error``.

        Never the object itself: its traceback pins the actor's frames and their
        locals (whole camera frames), and a worker would keep a thousand of them.
        """
        detached = detach_exception(error)
        if detached is None:
            return
        with self._lock:
            self._failures[message_id] = detached
            while len(self._failures) > REMEMBERED_FAILURES:
                self._failures.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()

    def proxies(self, letters: list[DeadLetter]) -> list[MessageProxy]:
        """The dead letters as the StubBroker's ``dead_letters`` gives them: a proxy per decodable
        message, carrying its remembered exception, else :class:`DeadLettered` with the reason."""
        proxies = []
        for letter in letters:
            if letter.message is None:
                continue
            proxy = MessageProxy(letter.message)
            with self._lock:
                error = self._failures.get(letter.message.message_id)
            proxy.stuff_exception(error or DeadLettered(letter.reason, letter.message.message_id))
            proxies.append(proxy)
        return proxies
