"""Held gestures: a camera's per-frame gesture labels turned into ``gesture_started`` and
``gesture_ended`` events.

A label seen in one frame is noise as often as not (a hand passing through a pose);
a gesture someone makes on purpose lasts. A gesture *starts* once its label has been
seen in ``hold_frames`` consecutive frames of the camera, and *ends* once it has been
missing from ``release_frames`` consecutive frames: a single frame that misses it
(motion blur, a hand at the edge) does not end it. Each camera has its own
:class:`HeldGestures`, fed that camera's frames in order (the gesture processor
is camera-affine, so all of them reach the same instance).

An event is a small dict, ready for the MQTT bridge's event model: ``event``
(``gesture_started`` / ``gesture_ended``), ``gesture`` (its label), ``hand`` (the
hand that made it, as last seen) and ``frames`` (how many frames it was held, so far
for a start).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

GESTURE_STARTED = "gesture_started"
GESTURE_ENDED = "gesture_ended"


@dataclasses.dataclass
class _Streak:
    seen: int = 0
    missed: int = 0
    hand: str = ""
    held: bool = False


class HeldGestures:
    """One camera's gestures over time (see the module docstring).

    Parameters:
      hold_frames: consecutive frames a label needs to start (at least 1).
      release_frames: consecutive frames without it that end it (default: ``hold_frames``).
      ignored: labels that never become events (``none``).
    """

    def __init__(self, hold_frames: int, release_frames: int | None = None, ignored: Iterable[str] = ("none",)) -> None:
        if hold_frames < 1:
            raise ValueError("hold_frames must be at least 1")
        self.hold_frames = hold_frames
        self.release_frames = max(1, release_frames if release_frames is not None else hold_frames)
        self.ignored = frozenset(ignored)
        self._streaks: dict[str, _Streak] = {}

    @property
    def held(self) -> list[str]:
        """The labels held now."""
        return [label for label, streak in self._streaks.items() if streak.held]

    def observe(self, gestures: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """Feed the next frame's gestures, ``(label, hand)`` pairs; return the events it causes."""
        present = {label: hand for label, hand in gestures if label not in self.ignored}
        events: list[dict[str, Any]] = []
        for label, hand in present.items():
            streak = self._streaks.setdefault(label, _Streak())
            streak.seen, streak.missed, streak.hand = streak.seen + 1, 0, hand
            if not streak.held and streak.seen >= self.hold_frames:
                streak.held = True
                events.append(_event(GESTURE_STARTED, label, streak))
        for label in [label for label in self._streaks if label not in present]:
            streak = self._streaks[label]
            streak.missed += 1
            if not streak.held:
                del self._streaks[label]  # not yet held: the streak is broken
            elif streak.missed >= self.release_frames:
                events.append(_event(GESTURE_ENDED, label, streak))
                del self._streaks[label]
        return events


def _event(kind: str, label: str, streak: _Streak) -> dict[str, Any]:
    return {"event": kind, "gesture": label, "hand": streak.hand, "frames": streak.seen}
