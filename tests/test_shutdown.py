"""Leaving the registry for good (issue 14, "a flaky test").

``frameflow demo`` once returned with ``frameflow:processor:sample-1`` still in Redis: a heartbeat
that began before the processor deregistered found its entry gone and registered it again. These
tests hold a beat half-way (after it decided to beat, before it writes) while the processor stops or
unregisters, then let it go on, and check the entry is gone and stays gone. The processor runs in
this process (its beat is held through its registry object); Redis is a real server.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import redis

from pipeline import ProcessorClient
from pipeline.domain.keys import processor_key
from tests.polling import holds_for, wait_until

from .processor_harness import RecordingProcessor, running

#: Beats of the processors here. An entry a stray beat registers again lives three of them, long
#: after the tests look; a few of them pass while the tests watch the entry stay deleted.
INTERVAL_S = 1.0

#: How long a held beat waits for the registry entry to go before it writes anyway.
HOLD_S = 1.0


class HeldBeat:
    """Holds the next heartbeat of a running processor before it writes to Redis, until the
    processor deregisters (or :data:`HOLD_S` passed: a fixed processor deregisters only after it)."""

    def __init__(self, processor: ProcessorClient) -> None:
        registry = processor._registry
        assert registry is not None, "the processor is not registered"
        self.started, self.finished, self.deregistered = threading.Event(), threading.Event(), threading.Event()
        heartbeat, deregister = registry.heartbeat, registry.deregister

        def held_heartbeat(*args: Any, **kwargs: Any) -> bool:
            if self.started.is_set():
                return heartbeat(*args, **kwargs)
            self.started.set()
            self.deregistered.wait(HOLD_S)
            try:
                return heartbeat(*args, **kwargs)
            finally:
                self.finished.set()

        def signalling_deregister(processor_id: str) -> bool:
            try:
                return deregister(processor_id)
            finally:
                self.deregistered.set()

        registry.heartbeat = held_heartbeat  # type: ignore[method-assign]
        registry.deregister = signalling_deregister  # type: ignore[method-assign]


def _stays_deregistered(client: redis.Redis, processor_id: str, beat: HeldBeat) -> None:
    key = processor_key("frameflow", processor_id)
    wait_until(beat.finished.is_set, 10, "the held beat to finish")
    holds_for(lambda: client.exists(key) == 0, 2.5 * INTERVAL_S, f"{key} deleted")


def test_a_beat_in_progress_when_the_processor_stops_cannot_register_it_again(
    redis_url: str, redis_client: redis.Redis
) -> None:
    processor = RecordingProcessor("leaving-1", ["leaving"], redis_url, health_check_interval=INTERVAL_S)
    with running(processor, redis_client):
        beat = HeldBeat(processor)
        assert beat.started.wait(10), "no heartbeat began"
    # running() stopped the processor while the beat was held: stop() waits for it, then deregisters.
    _stays_deregistered(redis_client, "leaving-1", beat)


def test_a_beat_in_progress_during_unregister_cannot_register_the_processor_again(
    redis_url: str, redis_client: redis.Redis
) -> None:
    processor = RecordingProcessor("leaving-2", ["leaving"], redis_url, health_check_interval=INTERVAL_S)
    with running(processor, redis_client):
        beat = HeldBeat(processor)
        assert beat.started.wait(10), "no heartbeat began"
        assert processor._loop is not None
        asyncio.run_coroutine_threadsafe(processor.unregister(), processor._loop).result(timeout=10)
        _stays_deregistered(redis_client, "leaving-2", beat)  # while heartbeats go on
