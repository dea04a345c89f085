"""Object tracks: the debounce state machine that turns per-frame detections into events.

A track is one label on one camera (``person`` on ``front-door``) for as long as it keeps being
seen: a person standing in view for a minute is one ``new`` event, a few ``update`` events (when
the count changes or the score improves) and one ``end``, not 900 messages. A track ends when

* a later frame of the same camera and label comes more than ``gap_s`` after its last one
  (frame time, the camera's capture timestamps), which ends the old track and starts a new one; or
* the bridge has read every result there is and has not seen the label for ``gap_s`` of its own
  time (:meth:`Tracker.expire`). Replaying a backlog after an outage therefore follows the frames'
  own times and does not end tracks merely because the bridge was away.

Pure: no I/O, no clock of its own; the caller passes the times. Everything here is unit-tested
in ``tests/test_mqtt_tracks.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Literal

#: (camera, label): what a track is about.
TrackKey = tuple[str, str]

Box = tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class Detection:
    """One detected object: its label, score (0..1) and box (x1, y1, x2, y2 in the frame's pixels)."""

    label: str
    score: float
    box: Box | None = None


@dataclasses.dataclass(frozen=True)
class Observation:
    """Every detection of one label in one frame (a result entry holds one per label it found)."""

    camera: str
    label: str
    frame_id: str
    time: float  # the frame's capture time, seconds since the epoch
    detections: tuple[Detection, ...]
    snapshot_ref: str | None = None  # where the processor kept the frame's image (see pipeline.domain.kept_images)

    @property
    def count(self) -> int:
        return len(self.detections)

    @property
    def best(self) -> Detection:
        return max(self.detections, key=lambda detection: detection.score)


@dataclasses.dataclass(frozen=True)
class TrackState:
    """A track as its events show it (``before``/``after``)."""

    id: str
    camera: str
    label: str
    count: int  # objects of the label in the track's latest frame; 0 once ended
    score: float  # the best score in the latest frame
    box: Box | None  # the best box in the latest frame
    frame_id: str  # the latest frame
    top_score: float  # the best score of the whole track
    top_frame_id: str  # the frame it came from: the snapshot's frame
    start_time: float
    last_time: float  # the latest frame's time
    end_time: float | None = None  # set when the track ended

    @property
    def active(self) -> bool:
        return self.end_time is None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "camera": self.camera,
            "label": self.label,
            "count": self.count,
            "score": self.score,
            "top_score": self.top_score,
            "box": list(self.box) if self.box is not None else None,
            "frame_id": self.frame_id,
            "top_frame_id": self.top_frame_id,
            "start_time": self.start_time,
            "last_time": self.last_time,
            "end_time": self.end_time,
            "active": self.active,
        }


EventType = Literal["new", "update", "end"]


@dataclasses.dataclass(frozen=True)
class TrackEvent:
    """A change of a track: ``new`` (no ``before``), ``update`` or ``end``.

    ``improved`` says the track's best frame changed (a new snapshot is due),
    ``count_changed`` that its retained count must be published.
    """

    type: EventType
    before: TrackState | None
    after: TrackState
    improved: bool = False
    count_changed: bool = False

    @property
    def key(self) -> TrackKey:
        return (self.after.camera, self.after.label)


@dataclasses.dataclass
class _Live:
    state: TrackState
    seen_at: float  # the caller's clock when the track was last observed


def track_id(camera: str, label: str, frame_id: str) -> str:
    """A track's id, from its first frame: the same first frame always gives the same id."""
    return hashlib.blake2s(f"{camera}\0{label}\0{frame_id}".encode(), digest_size=8).hexdigest()


class Tracker:
    """Live tracks by (camera, label); see the module docstring for when one ends.

    Parameters:
      gap_s: how long a label may go unseen before its track ends.
    """

    def __init__(self, gap_s: float) -> None:
        if gap_s <= 0:
            raise ValueError("gap_s must be positive")
        self.gap_s = gap_s
        self._live: dict[TrackKey, _Live] = {}

    def __len__(self) -> int:
        return len(self._live)

    def active(self) -> list[TrackState]:
        return [live.state for live in self._live.values()]

    def observe(self, observation: Observation, clock: float) -> list[TrackEvent]:
        """The events ``observation`` causes (none, ``new``, ``update``, or ``end`` then ``new``).

        ``clock`` is the caller's monotonic time, what :meth:`expire` measures silence with.
        """
        if not observation.detections:
            return []
        key = (observation.camera, observation.label)
        events: list[TrackEvent] = []
        live = self._live.get(key)
        if live is not None and observation.time - live.state.last_time > self.gap_s:
            events.append(self._end(key))
            live = None
        best = observation.best
        if live is None:
            state = TrackState(
                id=track_id(observation.camera, observation.label, observation.frame_id),
                camera=observation.camera,
                label=observation.label,
                count=observation.count,
                score=best.score,
                box=best.box,
                frame_id=observation.frame_id,
                top_score=best.score,
                top_frame_id=observation.frame_id,
                start_time=observation.time,
                last_time=observation.time,
            )
            self._live[key] = _Live(state, clock)
            events.append(TrackEvent("new", None, state, improved=True, count_changed=True))
            return events
        before = live.state
        improved = best.score > before.top_score
        after = dataclasses.replace(
            before,
            count=observation.count,
            score=best.score,
            box=best.box,
            frame_id=observation.frame_id,
            top_score=best.score if improved else before.top_score,
            top_frame_id=observation.frame_id if improved else before.top_frame_id,
            last_time=max(before.last_time, observation.time),  # a late frame never moves time back
        )
        live.state, live.seen_at = after, clock
        count_changed = after.count != before.count
        if improved or count_changed:
            events.append(TrackEvent("update", before, after, improved=improved, count_changed=count_changed))
        return events

    def expire(self, clock: float) -> list[TrackEvent]:
        """End every track not observed for ``gap_s`` of the caller's ``clock``."""
        stale = [key for key, live in self._live.items() if clock - live.seen_at > self.gap_s]
        return [self._end(key) for key in stale]

    def _end(self, key: TrackKey) -> TrackEvent:
        before = self._live.pop(key).state
        after = dataclasses.replace(before, count=0, end_time=before.last_time)
        return TrackEvent("end", before, after, count_changed=True)
