"""What a benchmark run measures: the contenders, their parameters, and the targets of issue 7."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Contender:
    """One measured configuration, run in a fresh process per run (:mod:`benchmarks.child`)."""

    name: str
    label: str
    case: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sizes:
    """How much each run moves; ``quick`` sizes finish in about a minute."""

    messages: int = 10_000
    frames: int = 5_000
    big_frames: int = 1_000
    batch_frames: int = 20_000
    latency_s: float = 60.0
    threads: int = 8

    @classmethod
    def quick(cls) -> Sizes:
        return cls(messages=3_000, frames=1_500, big_frames=300, batch_frames=5_000, latency_s=10.0)


KB = 1024


def contenders(sizes: Sizes) -> list[Contender]:
    threads = sizes.threads
    broker = {"messages": sizes.messages, "threads": threads}
    return [
        Contender(
            "raw_1k",
            "raw redis-py, 1 KB (pipelined XADD / XREADGROUP+XACK)",
            "raw",
            {"messages": 2 * sizes.messages, "size": KB, "batch": 100},
        ),
        Contender(
            "raw_100k", "raw redis-py, 100 KB", "raw", {"messages": sizes.big_frames, "size": 100 * KB, "batch": 10}
        ),
        Contender(
            "raw_single",
            "raw redis-py, one 200 B XADD per round trip (bare connection)",
            "raw",
            {"messages": sizes.messages, "size": 200, "batch": 1, "single": True},
        ),
        Contender("stub", "Dramatiq StubBroker (in memory)", "dramatiq", {"broker": "stub", **broker}),
        Contender("stock", "Dramatiq RedisBroker (stock)", "dramatiq", {"broker": "stock", **broker}),
        Contender("frameflow", "frameflow RedisStreamsBroker", "dramatiq", {"broker": "frameflow", **broker}),
        Contender(
            "pipeline_1k",
            "frameflow pipeline, 1 KB frames",
            "pipeline",
            {"frames": sizes.frames, "size": KB, "capacity": threads},
        ),
        Contender(
            "pipeline_100k",
            "frameflow pipeline, 100 KB frames (inline, raw)",
            "pipeline",
            {"frames": sizes.big_frames, "size": 100 * KB, "capacity": threads},
        ),
        Contender(
            "publish_many_1k",
            "frameflow FrameProducer.publish_many, 1 KB",
            "publish_many",
            {"frames": sizes.batch_frames, "size": KB, "batch": 1000},
        ),
        *routing_sweep(sizes),
    ]


#: Live processors of one capability in the routing sweep (issue 19: the rate with 500 >= 0.8x the rate with 1).
ROUTING_SWEEP = (1, 10, 100, 500)


def routing_sweep(sizes: Sizes) -> list[Contender]:
    """Single-frame publish with N processors of one capability (:mod:`benchmarks.case_routing`)."""
    return [
        Contender(
            f"routing_{count}",
            f"frameflow publish, 1 KB, {count} processor{'s' if count > 1 else ''} of one capability",
            "routing",
            {"processors": count, "frames": 2 * sizes.frames, "size": KB},
        )
        for count in ROUTING_SWEEP
    ]


def latency_params(sizes: Sizes) -> dict[str, Any]:
    return {"cameras": 10, "fps": 30, "duration_s": sizes.latency_s, "size": KB}


@dataclass(frozen=True)
class Target:
    """A ratio (or figure) the issue asks for: ``numerator / denominator >= minimum``."""

    label: str
    numerator: tuple[str, str]
    denominator: tuple[str, str] | None
    minimum: float
    unit: str = "x"


TARGETS = [
    Target("frameflow broker no-op completion / StubBroker's", ("frameflow", "complete"), ("stub", "complete"), 0.75),
    Target(
        "frameflow broker no-op completion / stock Dramatiq's", ("frameflow", "complete"), ("stock", "complete"), 3.0
    ),
    Target("frameflow single-message send / stock Dramatiq's", ("frameflow", "send"), ("stock", "send"), 3.0),
    Target(
        "pipeline 1 KB completion (routing, results) / stock bare no-op completion",
        ("pipeline_1k", "complete"),
        ("stock", "complete"),
        2.0,
    ),
    Target(
        "pipeline 100 KB in+out / raw redis-py 100 KB in+out",
        ("pipeline_100k", "through"),
        ("raw_100k", "through"),
        0.5,
    ),
    Target("publish_many, 1 KB frames/s", ("publish_many_1k", "send"), None, 20_000, unit="/s"),
    Target("publish rate with 500 processors / with 1", ("routing_500", "send"), ("routing_1", "send"), 0.8),
]
