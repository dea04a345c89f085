"""The plan and the books of a soak (``frameflow soak``): what runs, where every frame went, memory,
latency and freshness, and the bounds they are held to, derived from the plan and the pace the
processors kept.
"""

from __future__ import annotations

import dataclasses
import statistics
import uuid

from rich.table import Table

#: What each drop reason (a field of a queue's drops hash, or one of ours) means in the table.
DROP_REASONS = {
    "bound": "queue bound (oldest dropped)",
    "stale": "stale (older than max age)",
    "image_expired": "image expired",
    "dead_letter": "dead-lettered",
    "parked_stale": "parked, then stale (no processor)",
    "parked_overflow": "parked, then over the parked bound",
    "parked_waiting": "parked, no processor yet",
}


@dataclasses.dataclass(frozen=True)
class SoakPlan:
    """What to run. Capacity is ``processors * capacity`` frames per ``processing_ms``."""

    duration_s: float = 60.0
    overload: float = 10.0
    processors: int = 2
    capacity: int = 2
    processing_ms: float = 20.0
    queue_bound: int = 100
    cameras: int = 4
    image_bytes: int = 1024
    max_age_ms: int = 5000
    max_memory: str = "64mb"
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def capacity_fps(self) -> float:
        return self.processors * self.capacity * 1000 / self.processing_ms

    @property
    def target_fps(self) -> float:
        return self.overload * self.capacity_fps

    @property
    def drain_ms(self) -> float:
        """How long one processor takes to work through a full queue: the oldest a frame taken
        from a bounded queue can be, if processors run at their capacity."""
        return self.queue_bound / self.capacity * self.processing_ms

    @property
    def capability(self) -> str:
        return f"soak-{self.run_id}"

    @property
    def result_stream(self) -> str:
        return f"soak:{self.run_id}:processed"

    @property
    def processor_ids(self) -> list[str]:
        return [f"soak-{self.run_id}-{number}" for number in range(1, self.processors + 1)]


@dataclasses.dataclass(frozen=True)
class Percentiles:
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        ordered = sorted(values) or [0.0]

        def at(share: float) -> float:
            return ordered[min(len(ordered) - 1, int(len(ordered) * share))]

        return cls(statistics.median(ordered), at(0.95), at(0.99), ordered[-1])


@dataclasses.dataclass(frozen=True)
class SoakSummary:
    plan: SoakPlan
    seconds: float
    frames_in: int
    refused: int
    processed: int
    duplicates: int
    drops: dict[str, int]
    left_queued: int
    memory_baseline: int
    memory_peak: int
    memory_bound: int
    memory_bound_source: str
    processed_fps: float
    latency_ms: Percentiles
    age_ms: Percentiles
    first_error: str = ""

    @property
    def offered_fps(self) -> float:
        return (self.frames_in + self.refused) / self.seconds if self.seconds else 0.0

    @property
    def service_ms(self) -> float:
        """One worker thread's time per frame, as measured under overload (work plus overhead)."""
        threads = self.plan.processors * self.plan.capacity
        return threads * 1000 / self.processed_fps if self.processed_fps else self.plan.processing_ms

    @property
    def latency_bound_ms(self) -> float:
        """A full queue ahead of the frame, one frame prefetched ahead of it, then its own processing."""
        return (self.plan.queue_bound / self.plan.capacity + 2) * self.service_ms

    @property
    def newest_window_ms(self) -> float:
        """The time the newest ``queue_bound`` frames of one queue span at the offered rate: under
        overload a queue that drops its oldest holds just those, so no older frame is taken."""
        per_queue_fps = self.offered_fps / self.plan.processors
        return self.plan.queue_bound * 1000 / per_queue_fps if per_queue_fps else 0.0

    @property
    def age_bound_ms(self) -> float:
        """Under overload: the newest window, one frame prefetched ahead, and the frame itself."""
        return self.newest_window_ms + 2 * self.service_ms

    @property
    def unaccounted(self) -> int:
        return self.frames_in - self.processed - sum(self.drops.values()) - self.left_queued

    def problems(self) -> list[str]:
        """Why the run failed, if it did: the books, what is left, refused writes, memory."""
        found = []
        if self.unaccounted:
            found.append(f"{self.unaccounted} frames unaccounted for")
        if self.left_queued:
            found.append(f"{self.left_queued} frames still queued after the drain deadline")
        if self.refused:
            found.append(f"{self.refused} frames refused by Redis ({self.first_error})")
        if self.memory_peak > self.memory_bound:
            found.append(f"Redis used {self.memory_peak} bytes, over the bound of {self.memory_bound}")
        return found


def summary_table(summary: SoakSummary) -> Table:
    """The soak's books: what came in, where every frame went, memory, latency and freshness."""
    plan = summary.plan
    table = Table(title=f"frameflow soak: {plan.overload:g}x capacity for {plan.duration_s:g} s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("bound / note")
    table.add_row(
        "capacity (frames/s)",
        f"{plan.capacity_fps:.0f}",
        f"{plan.processors} processors x {plan.capacity} threads x {plan.processing_ms:g} ms; "
        f"measured {summary.processed_fps:.0f}",
    )
    table.add_row(
        "offered (frames/s)", f"{summary.offered_fps:.0f}", f"target {plan.target_fps:.0f}, {plan.cameras} cameras"
    )
    table.add_row("frames in", str(summary.frames_in), f"refused by Redis: {summary.refused}")
    table.add_row("processed", str(summary.processed), f"duplicates: {summary.duplicates}")
    for reason, count in summary.drops.items():
        table.add_row(f"dropped: {DROP_REASONS.get(reason, reason)}", str(count), "")
    table.add_row("left in queues", str(summary.left_queued), "must be 0")
    table.add_row("unaccounted", str(summary.unaccounted), "must be 0")
    table.add_row(
        "Redis used_memory peak",
        _mib(summary.memory_peak),
        f"bound {_mib(summary.memory_bound)} ({summary.memory_bound_source}); at start {_mib(summary.memory_baseline)}",
    )
    for name, values, bound in (
        ("latency, capture to result", summary.latency_ms, summary.latency_bound_ms),
        ("age at start, under overload", summary.age_ms, summary.age_bound_ms),
    ):
        table.add_row(
            f"{name} p50/p95/p99/max (ms)",
            f"{values.p50:.0f} / {values.p95:.0f} / {values.p99:.0f} / {values.max:.0f}",
            f"bound {bound:.0f}",
        )
    return table


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"
