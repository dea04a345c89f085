"""The router's index (``middleware/route_index.py``) chooses exactly what a scan of every
processor chose: the lowest load, then the most of the frame's capabilities covered, then the
lowest id; draining processors never, open breakers only as probes let through."""

from __future__ import annotations

import random

import pytest

from middleware.affinity import camera_instance, first_open
from middleware.route_index import RouteIndex, covered
from pipeline.domain.registry import BREAKER_OPEN, ProcessorInfo

CAPABILITIES = ("face", "object", "gesture")


def processors(rng: random.Random, count: int) -> list[ProcessorInfo]:
    found = []
    for number in range(count):
        offered = tuple(rng.sample(CAPABILITIES, rng.randint(1, 3)))
        found.append(
            ProcessorInfo(
                processor_id=f"p-{number:03d}",
                capabilities=offered,
                capacity=rng.choice((1, 2, 4, 8)),
                queue_name=f"frames.ready.p-{number:03d}",
                actor_name="process_frame",
                draining=rng.random() < 0.1,
                breaker=BREAKER_OPEN if rng.random() < 0.1 else "closed",
                queue_bound=rng.choice((0, 4)),
            )
        )
    return found


def scanned(
    everyone: list[ProcessorInfo], load: dict[str, float], capability: str, capabilities: list[str]
) -> ProcessorInfo | None:
    """The choice as the router made it before the index: a scan of every processor."""
    candidates = [
        info
        for info in everyone
        if capability in info.capabilities and not info.draining and info.breaker != BREAKER_OPEN
    ]
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda info: (load[info.processor_id], -covered(info.capabilities, capabilities), info.processor_id),
    )


@pytest.mark.parametrize("seed", range(20))
def test_the_index_chooses_what_a_scan_of_every_processor_chose(seed: int) -> None:
    rng = random.Random(seed)
    everyone = processors(rng, rng.randint(1, 60))
    index = RouteIndex(everyone)
    for refresh in range(3):
        index.measured({info.processor_id: float(rng.randint(0, 3)) for info in everyone})
        for _ in range(300):
            capabilities = rng.sample(CAPABILITIES, rng.randint(1, 3))
            capability = capabilities[0]
            expected = scanned(everyone, index.load, capability, capabilities)
            chosen = index.least_loaded(capability, capabilities)
            assert chosen == expected, (seed, refresh)
            if chosen is not None:
                index.routed(chosen)


def test_a_probe_competes_by_load_and_a_draining_processor_never_does() -> None:
    open_ = ProcessorInfo("a-open", ("face",), 1, "q.a", "act", breaker=BREAKER_OPEN)
    draining = ProcessorInfo("b-draining", ("face",), 1, "q.b", "act", draining=True)
    busy = ProcessorInfo("c-busy", ("face",), 1, "q.c", "act")
    index = RouteIndex([open_, draining, busy])
    index.measured({"a-open": 0.0, "b-draining": 0.0, "c-busy": 5.0})
    assert index.routable("face") == [busy] and index.tripped("face") == [open_]
    assert index.least_loaded("face", ["face"]) == busy
    assert index.least_loaded("face", ["face"], also=[open_]) == open_
    index.routed(open_)
    assert index.load["a-open"] == 1.0


def test_a_cameras_ranking_places_it_as_the_rendezvous_hash_does() -> None:
    instances = [
        ProcessorInfo(f"g-{n}", ("gesture",), 1, f"q.{n}", "act", affinity="camera", queue_bound=2) for n in range(8)
    ]
    index = RouteIndex(instances)
    index.measured({info.processor_id: 0.0 for info in instances})
    assert index.affine("gesture")
    for camera in (f"cam-{n}" for n in range(20)):
        ranking = index.ranking("gesture", camera)
        assert index.ranking("gesture", camera) is ranking  # kept
        assert first_open(ranking, index.load) == camera_instance(camera, instances, index.load)
        home = ranking[0]
        index.load[home.processor_id] = 3.0  # full: its bound plus its capacity
        assert first_open(ranking, index.load) == ranking[1] == camera_instance(camera, instances, index.load)
        index.load[home.processor_id] = 0.0
