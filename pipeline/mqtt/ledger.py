"""Which result entries may be acknowledged: the bridge's at-least-once bookkeeping.

An entry is acknowledged (``XACK``) only when everything it causes has been acknowledged by the
MQTT broker. That includes what it causes later: the latest entry of a live track is what its
``end`` event will come from, so it stays pending until the track ends (or a newer entry of the
track takes its place). A bridge killed at any moment therefore finds, on restart, every entry
whose consequences might not have been published yet, and replays them (duplicates possible,
never a loss). Pure bookkeeping: no I/O.
"""

from __future__ import annotations

from collections import Counter

from .tracks import TrackKey

#: (stream, entry id).
EntryRef = tuple[str, str]


class AckLedger:
    """Reference counts on entries: one while the bridge processes an entry, one per track it is
    the latest entry of. An entry whose count drops to zero is returned, to be acknowledged once
    the publishes before it are confirmed."""

    def __init__(self) -> None:
        self._references: Counter[EntryRef] = Counter()
        self._latest: dict[TrackKey, EntryRef] = {}

    def begin(self, entry: EntryRef) -> None:
        """The bridge starts processing ``entry``."""
        self._references[entry] += 1

    def hold(self, track: TrackKey, entry: EntryRef) -> list[EntryRef]:
        """``entry`` is now ``track``'s latest; returns what the previous latest frees."""
        previous = self._latest.get(track)
        if previous == entry:
            return []
        self._latest[track] = entry
        self._references[entry] += 1
        return self._release(previous) if previous is not None else []

    def end(self, track: TrackKey) -> list[EntryRef]:
        """``track`` ended (its ``end`` is published): its latest entry is no longer needed by it."""
        previous = self._latest.pop(track, None)
        return self._release(previous) if previous is not None else []

    def finish(self, entry: EntryRef) -> list[EntryRef]:
        """The bridge is done processing ``entry``."""
        return self._release(entry)

    def held(self) -> int:
        """Entries kept pending for live tracks."""
        return len(set(self._latest.values()))

    def _release(self, entry: EntryRef) -> list[EntryRef]:
        self._references[entry] -= 1
        if self._references[entry] > 0:
            return []
        del self._references[entry]
        return [entry]
