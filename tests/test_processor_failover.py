"""A processor killed with SIGKILL: its peers take over its frames and nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from middleware.routing import CapabilityRouter
from pipeline import FrameProducer, ProcessorRegistry, RedisStreamsBroker
from pipeline.processes.scheduler import PipelineScheduler
from tests.polling import wait_until

HEARTBEAT_S = 0.5


@pytest.fixture
def start_processor(redis_url: str) -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(processor_id: str, *capabilities: str, delay_s: float = 0.02) -> subprocess.Popen:
        env = {**os.environ, "REDIS_URL": redis_url, "ECHO_DELAY_S": str(delay_s)}
        process = subprocess.Popen([sys.executable, "-m", "tests.echo_processor", processor_id, *capabilities], env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def results(client: redis.Redis) -> set[str]:
    return {fields[b"echo"].decode() for _, fields in client.xrange("echo:results")}


@pytest.mark.slow
def test_killed_processor_gets_no_frames_and_its_backlog_moves_to_a_peer(
    redis_url: str, redis_client: redis.Redis, start_processor
) -> None:
    registry = ProcessorRegistry(redis_client)
    victim = start_processor("face-a", "face_detection", delay_s=0.2)
    start_processor("face-b", "face_detection", delay_s=0.02)
    wait_until(lambda: len(registry.list()) == 2, 20, "both processors to register")

    producer = FrameProducer(redis_url, max_age_ms=120_000)
    producer.router.refresh_s = 0.0  # read the registry on every publish: this test is about liveness, not caching
    published = [
        producer.publish(camera_id="cam-1", image=b"jpeg", capabilities=["face_detection"], width=4, height=4)
        for _ in range(40)
    ]
    assert {"face-a", "face-b"} <= {target for decision in published for target in decision.targets}
    wait_until(lambda: redis_client.xlen("frames:ready:face-a") > 0, 10, "a backlog on face-a")

    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    wait_until(lambda: registry.get("face-a") is None, 3 * HEARTBEAT_S + 2, "face-a to be declared dead")
    assert time.monotonic() - killed_at <= 3 * HEARTBEAT_S + 1

    after_death = [
        producer.publish(camera_id="cam-1", image=b"jpeg", capabilities=["face_detection"], width=4, height=4)
        for _ in range(20)
    ]
    assert all(decision.targets == ("face-b",) for decision in after_death)

    broker = RedisStreamsBroker(redis_url, middleware=[CapabilityRouter()])
    scheduler = PipelineScheduler(broker, interval_s=HEARTBEAT_S)
    reaped = scheduler.reap_dead()
    assert reaped.get("face-a", 0) > 0
    assert redis_client.exists("frames:ready:face-a") == 0

    expected = {decision.frame_id for decision in published + after_death}
    wait_until(lambda: results(redis_client) >= expected, 30, "every frame's result")
    assert "face-a" not in registry.known_ids()

    restarted = start_processor("face-a", "face_detection")
    wait_until(lambda: registry.get("face-a") is not None, 20, "face-a to register again")
    info = registry.get("face-a")
    assert info is not None and info.pid == restarted.pid and info.processed == 0
    broker.close()
    producer.close()
