"""Held gestures (``workers/held_gestures.py``): per-frame labels become start and end events."""

from __future__ import annotations

from workers.held_gestures import GESTURE_ENDED, GESTURE_STARTED, HeldGestures


def feed(held: HeldGestures, frames: list[list[str]]) -> list[list[tuple[str, str]]]:
    """The (event, gesture) pairs of each frame of labels (all made by the right hand)."""
    return [
        [(event["event"], event["gesture"]) for event in held.observe((label, "Right") for label in labels)]
        for labels in frames
    ]


def test_a_gesture_starts_once_held_for_n_frames_and_ends_after_n_without_it() -> None:
    events = feed(HeldGestures(3), [["call"]] * 4 + [[]] * 3)
    assert events == [[], [], [(GESTURE_STARTED, "call")], [], [], [], [(GESTURE_ENDED, "call")]]


def test_a_gesture_seen_for_fewer_frames_than_n_never_starts() -> None:
    assert feed(HeldGestures(3), [["rock"], ["rock"], [], ["rock"], ["rock"], []]) == [[]] * 6


def test_one_frame_without_a_held_gesture_does_not_end_it() -> None:
    events = feed(HeldGestures(2), [["four"], ["four"], [], ["four"], [], []])
    assert events == [[], [(GESTURE_STARTED, "four")], [], [], [], [(GESTURE_ENDED, "four")]]


def test_none_is_never_an_event_and_two_gestures_are_followed_apart() -> None:
    held = HeldGestures(1)
    assert feed(held, [["none"], ["call", "rock"], ["rock"]]) == [
        [],
        [(GESTURE_STARTED, "call"), (GESTURE_STARTED, "rock")],
        [(GESTURE_ENDED, "call")],
    ]
    assert held.held == ["rock"]


def test_an_event_says_which_hand_and_for_how_many_frames() -> None:
    held = HeldGestures(2)
    held.observe([("victory", "Left")])
    assert held.observe([("victory", "Left")]) == [
        {"event": GESTURE_STARTED, "gesture": "victory", "hand": "Left", "frames": 2}
    ]
