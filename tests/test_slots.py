"""ProcessingSlots: a processor's bound on frames in flight, resizable while it runs."""

from __future__ import annotations

import threading

import pytest

from pipeline.processes.slots import ProcessingSlots
from tests.polling import holds_for, wait_until


def _acquire_in_thread(slots: ProcessingSlots) -> threading.Event:
    """Start a thread that takes a slot; the event is set once it has one."""
    taken = threading.Event()

    def take() -> None:
        slots.acquire()
        taken.set()

    threading.Thread(target=take, daemon=True).start()
    return taken


def test_a_frame_waits_while_every_slot_is_held_and_starts_when_one_is_released() -> None:
    slots = ProcessingSlots(2)
    slots.acquire()
    slots.acquire()
    taken = _acquire_in_thread(slots)
    holds_for(lambda: not taken.is_set(), 0.2, "the third frame waiting")
    slots.release()
    wait_until(taken.is_set, 10, "the waiting frame to take the released slot")
    assert slots.used == 2


def test_every_waiting_frame_starts_as_slots_are_released_one_by_one() -> None:
    slots = ProcessingSlots(1)
    slots.acquire()
    waiters = [_acquire_in_thread(slots) for _ in range(3)]
    for started in range(1, 4):
        slots.release()
        wait_until(lambda started=started: sum(w.is_set() for w in waiters) == started, 10, f"{started} started")
    assert slots.used == 1


def test_growing_the_bound_starts_waiting_frames_at_once() -> None:
    slots = ProcessingSlots(1)
    slots.acquire()
    waiters = [_acquire_in_thread(slots) for _ in range(2)]
    holds_for(lambda: not any(w.is_set() for w in waiters), 0.2, "both frames waiting")
    slots.resize(3)
    wait_until(lambda: all(w.is_set() for w in waiters), 10, "both frames to start")
    assert slots.used == 3


def test_shrinking_the_bound_starts_no_frame_until_fewer_are_in_flight() -> None:
    slots = ProcessingSlots(3)
    for _ in range(3):
        slots.acquire()
    slots.resize(1)
    taken = _acquire_in_thread(slots)
    slots.release()
    slots.release()  # one still in flight: the bound of one is reached
    holds_for(lambda: not taken.is_set(), 0.2, "the new frame waiting")
    slots.release()
    wait_until(taken.is_set, 10, "the new frame to start")


def test_releasing_a_slot_that_is_not_held_is_an_error() -> None:
    slots = ProcessingSlots(1)
    with pytest.raises(ValueError, match="not held"):
        slots.release()
    with slots:
        assert slots.used == 1
    assert slots.used == 0
