"""The keep-latest slot between a camera's capture thread and the publisher.

Freshness over completeness: a camera that delivers frames faster than they are published must not
queue them in memory, where they would only grow old. The capture thread overwrites the one slot; the
publisher takes whatever is newest. Every frame overwritten before it was taken is a skipped frame,
reported to ``on_skipped`` so it is counted, never silently lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Why a frame that was overwritten in the slot was never published.
OVERWRITTEN = "fps_cap"


class LatestSlot(Generic[T]):
    """Holds at most one item: the newest :meth:`put` not yet taken.

    Parameters:
      on_skipped: called with :data:`OVERWRITTEN` for each item replaced before it was taken.
    """

    def __init__(self, on_skipped: Callable[[str], None] = lambda reason: None) -> None:
        self._item: T | None = None
        self._ready = threading.Condition()
        self._on_skipped = on_skipped

    def put(self, item: T) -> None:
        with self._ready:
            replaced = self._item is not None
            self._item = item
            self._ready.notify_all()
        if replaced:
            self._on_skipped(OVERWRITTEN)

    def take(self, timeout: float | None = 0) -> T | None:
        """The newest item (the slot is then empty), waiting up to ``timeout`` seconds for one
        (``None``: forever); ``None`` when there is none."""
        with self._ready:
            if self._item is None and timeout != 0:
                self._ready.wait_for(lambda: self._item is not None, timeout)
            item, self._item = self._item, None
            return item

    def clear(self) -> T | None:
        """Empty the slot without counting (the caller accounts for what it removed)."""
        with self._ready:
            item, self._item = self._item, None
            return item
