"""Waiting in tests without sleeping as synchronisation: poll a condition until a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str | Callable[[], str] = "the condition",
    interval: float = 0.02,
) -> T:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            description = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g}s waiting for {description}")
        time.sleep(interval)


def holds_for(predicate: Callable[[], object], duration: float, what: str = "the condition") -> None:
    """Poll ``predicate`` for ``duration`` seconds and fail the first time it is false: for what must
    *stay* true (a key stays deleted), where there is no event to wait for."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not predicate():
            raise AssertionError(f"{what} stopped holding within {duration:g}s")
        time.sleep(0.02)
