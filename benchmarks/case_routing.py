"""Routing with many processors: single-frame publish with N live processors of one capability.

``run``: ``processors`` registry entries offering one capability, each with its real queue
and consumer group (nobody consuming), so the router reads N entries and measures N
queues at every refresh, as it would in a deployment of N processors. Then ``frames``
frames of ``size`` bytes are published one by one (timed: the publish rate) and the copies
each processor received are counted: ``copies_min`` and ``copies_max`` say how evenly
they were spread (equal capacities and empty queues: the same number each, give or take one).

Issue 19 asked that the rate with 500 processors be at least 0.8 of the rate with one
(``benchmarks/plan.py``'s target); the run lasts several of the router's refreshes (0.5 s).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis

from benchmarks.case_pipeline import MAX_AGE_MS
from benchmarks.timing import Phase
from pipeline import FrameProducer, ProcessorInfo, ProcessorRegistry
from pipeline.domain.keys import processor_queue
from pipeline.streams.keys import CONSUMER_GROUP, queue_keys

CAPABILITY = "bench-route"
NAMESPACE = "frameflow"


def register_processors(client: redis.Redis, count: int) -> list[str]:
    """``count`` live entries offering :data:`CAPABILITY`, each queue with its consumer group."""
    registry = ProcessorRegistry(client, NAMESPACE)
    ids = [f"route-{number:04d}" for number in range(count)]
    for processor_id in ids:
        queue = processor_queue(processor_id)
        info = ProcessorInfo(
            processor_id=processor_id,
            capabilities=(CAPABILITY,),
            capacity=8,
            queue_name=queue,
            actor_name=f"process_frame.{processor_id}",
            queue_bound=0,  # every copy kept: the spread is counted from the decisions
        )
        registry.register(info, ttl_s=600)
        client.xgroup_create(queue_keys(NAMESPACE, queue).stream, CONSUMER_GROUP, id="0", mkstream=True)
    return ids


def run(url: str, params: dict[str, Any]) -> dict[str, float]:
    count, frames, size = int(params["processors"]), int(params["frames"]), int(params["size"])
    monitor = redis.Redis.from_url(url)
    ids = register_processors(monitor, count)
    producer = FrameProducer(url)
    image = bytes(range(256)) * (size // 256) + bytes(size % 256)
    spec = {
        "image": image,
        "capabilities": [CAPABILITY],
        "width": 640,
        "height": 480,
        "max_age_ms": MAX_AGE_MS,
    }
    producer.publish(camera_id="cam-0", **spec)  # warm-up: connections, scripts, the router's first view
    copies: Counter[str] = Counter(dict.fromkeys(ids, 0))
    with Phase(monitor) as publishing:
        for index in range(frames):
            decision = producer.publish(camera_id=f"cam-{index % 10}", **spec)
            if len(decision.targets) != 1:
                raise RuntimeError(f"a frame went to {decision.targets}, not to one processor")
            copies[decision.targets[0]] += 1
    producer.close()
    monitor.close()
    return {
        **publishing.figures("send", frames),
        "copies_min": float(min(copies.values())),
        "copies_max": float(max(copies.values())),
    }
