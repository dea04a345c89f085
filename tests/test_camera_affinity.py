"""Camera affinity (``middleware/affinity.py``): a stateful processor's instances each keep their
cameras; a camera moves only when its instance dies, drains or overflows, and comes back after.
Processors without affinity keep least-loaded routing."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import redis

from middleware.affinity import rendezvous_score
from pipeline import FrameProducer, ProcessorRegistry
from tests.cli_harness import frameflow_process
from tests.polling import wait_until
from tests.processes import WorkerProcess, worker_env

from .processor_harness import publish, queue_entries, register_fake

CAPABILITY = "gesture_detection"
CAMERAS = [f"cam-{number}" for number in range(1, 7)]
RESULTS = "echo:results"


def send_rounds(redis_url: str, rounds: int) -> dict[str, str]:
    """``rounds`` frames of every camera, through a new producer (so it reads the registry afresh):
    frame id -> camera. Each round starts with another camera, so placement by load alone would
    not happen to repeat itself."""
    producer = FrameProducer(redis_url)
    try:
        sent = {}
        for round_ in range(rounds):
            for camera in CAMERAS[round_:] + CAMERAS[:round_]:
                sent[publish(producer, [CAPABILITY], camera_id=camera).frame_id] = camera
        return sent
    finally:
        producer.close()


def served_by(client: redis.Redis, sent: dict[str, str]) -> dict[str, set[str]]:
    """Which instances processed each camera's frames of ``sent``, read from the result stream
    once every one of them has a result."""

    def results() -> list[dict[bytes, bytes]] | None:
        found = [fields for _, fields in client.xrange(RESULTS) if fields[b"frame_id"].decode() in sent]
        return found if len(found) == len(sent) else None

    placement: dict[str, set[str]] = {camera: set() for camera in CAMERAS}
    for fields in wait_until(results, 60, f"results of {len(sent)} frames"):
        placement[fields[b"camera_id"].decode()].add(fields[b"processor_id"].decode())
    return placement


def only(placement: dict[str, set[str]], cameras: Iterable[str] = CAMERAS) -> dict[str, str]:
    """Camera -> its one instance; fails when a camera was served by several."""
    assert all(len(placement[camera]) == 1 for camera in cameras), placement
    return {camera: next(iter(placement[camera])) for camera in cameras}


def affine_instance(redis_url: str, processor_id: str, tmp_path: Path) -> WorkerProcess:
    env = worker_env(redis_url, lease_ms=2000, max_deliveries=3, ECHO_AFFINITY="camera", ECHO_QUEUE_BOUND="0")
    command = [sys.executable, "-m", "tests.echo_processor", processor_id, CAPABILITY]
    return WorkerProcess(command, env, tmp_path / f"{processor_id}.log")


def test_two_instances_keep_their_cameras_through_a_drain_and_a_kill(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    registry = ProcessorRegistry(redis_client)
    instances = {name: affine_instance(redis_url, name, tmp_path) for name in ("affine-a", "affine-b")}
    try:
        for name, instance in instances.items():
            wait_until(lambda n=name: registry.get(n), 30, lambda i=instance: i.log_tail())
        assert all(info.affinity == "camera" for info in registry.list())

        # Both live: every camera sticks to one instance, and the cameras are shared between them.
        home = only(served_by(redis_client, send_rounds(redis_url, 3)))
        assert set(home.values()) == set(instances), home
        on_a = [camera for camera in CAMERAS if home[camera] == "affine-a"]

        # Drained: a's cameras move to b; b's stay where they were.
        drained = frameflow_process("--redis-url", redis_url, "drain", "affine-a")
        assert drained.returncode == 0, drained.stderr
        assert only(served_by(redis_client, send_rounds(redis_url, 2))) == dict.fromkeys(CAMERAS, "affine-b")

        # Resumed: each camera is back on the instance it had.
        resumed = frameflow_process("--redis-url", redis_url, "drain", "affine-a", "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert only(served_by(redis_client, send_rounds(redis_url, 2))) == home

        # b killed: once its entry expires, its cameras go to a, and a keeps its own.
        instances["affine-b"].kill()
        wait_until(lambda: registry.get("affine-b") is None, 30, "affine-b's registry entry to expire")
        after_kill = only(served_by(redis_client, send_rounds(redis_url, 2)))
        assert after_kill == dict.fromkeys(CAMERAS, "affine-a")
        assert all(home[camera] == "affine-a" for camera in on_a)
    finally:
        for instance in instances.values():
            instance.stop()


def test_a_camera_leaves_an_instance_whose_queue_is_full(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    for name in ("full-a", "full-b"):
        register_fake(redis_client, name, (CAPABILITY,), affinity="camera", capacity=1, queue_bound=2)
    camera = "cam-1"
    home, other = sorted(("full-a", "full-b"), key=lambda name: -rendezvous_score(camera, name))
    assert publish(producer, [CAPABILITY], camera_id=camera).targets == (home,)
    for _ in range(2):
        redis_client.xadd(f"frames:ready:{home}", {"frame_id": "waiting"})  # its queue at its bound
    fresh = FrameProducer(redis_url)  # reads the loads afresh
    try:
        assert publish(fresh, [CAPABILITY], camera_id=camera).targets == (other,)
    finally:
        fresh.close()


def test_a_camera_follows_its_instance_filling_and_emptying_within_the_refresh(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    for name in ("full-a", "full-b", "full-c"):
        register_fake(redis_client, name, (CAPABILITY,), affinity="camera", capacity=1, queue_bound=100)
    camera = "cam-1"
    home, second, _ = sorted(("full-a", "full-b", "full-c"), key=lambda name: -rendezvous_score(camera, name))

    def goes_to(instance: str) -> bool:
        return all(publish(producer, [CAPABILITY], camera_id=camera).targets == (instance,) for _ in range(3))

    assert goes_to(home)
    with redis_client.pipeline(transaction=False) as pipe:  # another producer's frames: home over its bound
        for _ in range(150):
            pipe.xadd(f"frames:ready:{home}", {"frame_id": "waiting"})
        pipe.execute()
    wait_until(lambda: goes_to(second), 10, f"{camera} to move to {second} while {home} is full")
    redis_client.delete(f"frames:ready:{home}")  # home caught up
    wait_until(lambda: goes_to(home), 10, f"{camera} to come back to {home}")


def test_without_affinity_a_cameras_frames_are_shared_by_load(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    for name in ("plain-a", "plain-b"):
        register_fake(redis_client, name, (CAPABILITY,))
    for _ in range(4):
        publish(producer, [CAPABILITY], camera_id="cam-1")
    assert len(queue_entries(redis_client, "plain-a")) == len(queue_entries(redis_client, "plain-b")) == 2
