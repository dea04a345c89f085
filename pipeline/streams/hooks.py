"""Middleware hooks looked up once per signal, not on every message.

Dramatiq's ``Broker.emit_before``/``emit_after`` call ``getattr(middleware, signal)``
on every middleware for every signal, most of them the base class's no-ops: with
a processor's dozen middleware that is ~50 calls per message. :class:`HookTable`
keeps, per signal, the bound hooks a middleware actually defines (overridden in
its class or set on the instance), in the broker's order; the broker clears it
whenever its middleware list changes. Calls, order and error handling are
Dramatiq's: a ``MiddlewareError`` from a ``before_`` hook propagates, any other
exception is logged as critical and the next hook runs. The hooks of a signal about one
message are called without building an argument tuple per hook (:func:`_shape`).

A middleware that finds out its hooks will do nothing in this process (tracing without a
tracer) names them in its ``idle_hooks`` and asks the broker to look again
(``RedisStreamsBroker.refresh_hooks``): they are left out of the table from then on, so a
message no longer pays a call for each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from dramatiq.middleware import Middleware, MiddlewareError

Hook = Callable[..., Any]


class HookTable:
    """The hooks of one broker's middleware, per hook name (``before_enqueue``, ...)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._hooks: dict[str, list[Hook]] = {}

    def clear(self) -> None:
        self._hooks = {}

    def hooks(self, name: str, middleware: Sequence[Middleware]) -> list[Hook]:
        """The hooks called ``name`` in calling order: the middleware's order for ``before_``
        hooks, the reverse for the others (``after_``), as Dramatiq calls them."""
        hooks = self._hooks.get(name)
        if hooks is None:
            base = getattr(Middleware, name, None)
            ordered = middleware if name.startswith("before_") else list(reversed(middleware))
            hooks = [
                getattr(item, name)
                for item in ordered
                if (name in vars(item) or getattr(type(item), name, None) is not base)
                and name not in getattr(item, "idle_hooks", ())
            ]
            self._hooks[name] = hooks
        return hooks

    def emit(self, broker: Any, name: str, args: tuple, kwargs: dict) -> None:
        hooks = self._hooks.get(name)
        if hooks is None:
            hooks = self.hooks(name, broker.middleware)
        if not hooks:
            return  # most signals of most messages: no middleware defines the hook
        before = name.startswith("before_")
        shape = _shape(args, kwargs)
        subject = args[0] if shape is not _ANY else None
        value = kwargs.get(shape) if shape is _RESULT or shape is _EXCEPTION else None
        for hook in hooks:
            try:
                if shape is _SUBJECT:
                    hook(broker, subject)
                elif shape is _RESULT:
                    hook(broker, subject, result=value)
                elif shape is _EXCEPTION:
                    hook(broker, subject, exception=value)
                else:
                    hook(broker, *args, **kwargs)
            except MiddlewareError:
                if before:
                    raise
                self.logger.critical("Unexpected failure in %s of %r.", name, hook.__self__, exc_info=True)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", name, hook.__self__, exc_info=True)


# How a signal's hooks are called. The signals about one message (process_message, skip_message, ack, ...)
# are the hot ones: their hooks are called with plain arguments, ``result=``/``exception=`` included
# (Dramatiq's after_process_message), because ``hook(broker, *args, **kwargs)`` builds an argument tuple
# and a keyword table per hook: two thirds of what nine no-op hooks cost, and a processor runs nine
# hooks before and nine after each delivery.
_SUBJECT, _RESULT, _EXCEPTION, _ANY = "subject", "result", "exception", "any"


def _shape(args: tuple, kwargs: dict) -> str:
    if len(args) != 1:
        return _ANY
    if not kwargs:
        return _SUBJECT
    if len(kwargs) == 1:
        if _RESULT in kwargs:
            return _RESULT
        if _EXCEPTION in kwargs:
            return _EXCEPTION
    return _ANY
