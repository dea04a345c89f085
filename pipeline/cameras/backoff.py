"""Capped exponential backoff between reconnects: a camera that is down is not hammered,
and one that comes back is found again within ``cap_s``."""

from __future__ import annotations


class Backoff:
    """``initial_s``, twice that, ... up to ``cap_s``; :meth:`reset` after a success.

    Parameters:
      initial_s: the first delay.
      cap_s: no delay is longer.
    """

    def __init__(self, initial_s: float = 0.5, cap_s: float = 30.0) -> None:
        if not 0 < initial_s <= cap_s:
            raise ValueError(f"backoff from {initial_s:g}s to {cap_s:g}s: need 0 < initial <= cap")
        self.initial_s, self.cap_s = initial_s, cap_s
        self._next_s = initial_s

    def next_delay(self) -> float:
        delay = self._next_s
        self._next_s = min(self._next_s * 2, self.cap_s)
        return delay

    def reset(self) -> None:
        self._next_s = self.initial_s
