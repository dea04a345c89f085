"""What a benchmark run measures: the contenders, their parameters, the latency runs, and the targets
of issues 7 and 19. The report (:mod:`benchmarks.report`) takes every figure it names from here."""

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
    huge_frames: int = 150
    latency_s: float = 60.0
    threads: int = 8

    @classmethod
    def quick(cls) -> Sizes:
        return cls(messages=3_000, frames=1_500, big_frames=300, batch_frames=5_000, huge_frames=50, latency_s=10.0)


KB = 1024
MB = 1024 * KB

#: Frames ``publish_many`` is given per call in the benchmark (it writes them ``PUBLISH_CHUNK`` per round trip).
PUBLISH_BATCH = 1000

#: The latency the issues ask for at 10 cameras x 30 fps: p99 at most this, in milliseconds.
P99_TARGET_MS = 10.0


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
            {"frames": sizes.batch_frames, "size": KB, "batch": PUBLISH_BATCH},
        ),
        Contender("raw_1m", "raw redis-py, 1 MB", "raw", {"messages": sizes.huge_frames, "size": MB, "batch": 2}),
        Contender(
            "pipeline_1m",
            "frameflow pipeline, 1 MB frames (a 4K JPEG)",
            "pipeline",
            {"frames": sizes.huge_frames, "size": MB, "capacity": threads},
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


@dataclass(frozen=True)
class LatencyRun:
    """A fixed-rate run through the pipeline (:mod:`benchmarks.latency`); its figures join the runs under ``name``."""

    name: str
    params: dict[str, Any]

    @property
    def rate(self) -> int:
        return int(self.params["cameras"]) * int(self.params["fps"])


def latency_runs(sizes: Sizes) -> list[LatencyRun]:
    """10 cameras x 30 fps of 1 KB frames, then of 100 KB frames (claim-checked)."""
    return [
        LatencyRun(f"latency_{label}", {"cameras": 10, "fps": 30, "duration_s": sizes.latency_s, "size": size})
        for label, size in (("1k", KB), ("100k", 100 * KB))
    ]


@dataclass(frozen=True)
class Target:
    """A ratio (or figure) an issue asks for: ``numerator / denominator >= minimum``, or,
    with ``at_most``, ``numerator <= minimum`` (a latency, a memory drift)."""

    label: str
    numerator: tuple[str, str]
    denominator: tuple[str, str] | None
    minimum: float
    unit: str = "x"
    at_most: bool = False
    #: What nothing of its kind can beat, over the same denominator (a bare round trip for a send):
    #: printed beside a miss, so that a run shows whether the target was within reach on its machine.
    floor: tuple[str, str] | None = None


TARGETS = [
    # issue 7
    Target("frameflow broker no-op completion / StubBroker's", ("frameflow", "complete"), ("stub", "complete"), 0.75),
    Target(
        "frameflow broker no-op completion / stock Dramatiq's", ("frameflow", "complete"), ("stock", "complete"), 3.0
    ),
    Target(
        "frameflow single-message send / stock Dramatiq's",
        ("frameflow", "send"),
        ("stock", "send"),
        3.0,
        floor=("raw_single", "send"),
    ),
    Target(
        "pipeline 1 KB completion (routing, results) / stock bare no-op completion",
        ("pipeline_1k", "complete"),
        ("stock", "complete"),
        2.0,
    ),
    # issue 19
    Target(
        "pipeline 100 KB in+out / raw redis-py 100 KB in+out",
        ("pipeline_100k", "through"),
        ("raw_100k", "through"),
        0.5,
    ),
    Target(
        "pipeline 1 KB completion (no-op ProcessorClient) / bare broker no-op completion",
        ("pipeline_1k", "complete"),
        ("frameflow", "complete"),
        0.5,
    ),
    Target("pipeline 1 MB in+out / raw redis-py 1 MB in+out", ("pipeline_1m", "through"), ("raw_1m", "through"), 0.5),
    Target("publish_many, 1 KB frames/s", ("publish_many_1k", "send"), None, 20_000, unit="/s"),
    Target("publish rate with 500 processors / with 1", ("routing_500", "send"), ("routing_1", "send"), 0.8),
    Target(
        "10 cameras x 30 fps, 1 KB frames, p99", ("latency_1k", "p99_ms"), None, P99_TARGET_MS, unit=" ms", at_most=True
    ),
    Target(
        "10 cameras x 30 fps, 100 KB frames, p99",
        ("latency_100k", "p99_ms"),
        None,
        P99_TARGET_MS,
        unit=" ms",
        at_most=True,
    ),
    Target(
        "10 cameras x 30 fps, 100 KB frames: what Redis keeps (its keys' MEMORY USAGE) after - before",
        ("latency_100k", "kept_drift"),
        None,
        0,
        unit=" B",
        at_most=True,
    ),
]
