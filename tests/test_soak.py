"""Overload: real processor processes, a producer at 10x their capacity, every frame accounted for.

The soak runs for ``FRAMEFLOW_SOAK_S`` seconds (default 5): ``FRAMEFLOW_SOAK_S=60`` is issue 8's
one-minute run. The bounds asserted are derived from the plan (queue bound, processing time) and
the processors' pace as measured in the run, never picked by hand.
"""

from __future__ import annotations

import os

import pytest
import redis

from middleware.routing import CLAIM_CHECK_ABOVE, IMAGE_GRACE_MS
from pipeline import FrameProducer
from pipeline.domain.keys import image_key
from pipeline.tools.soak import SoakPlan, parse_memory, run_soak
from pipeline.tools.soak_report import SoakSummary
from tests.chaos import FaultFigures
from tests.cli_harness import frameflow, frameflow_process, table_row

SOAK_S = float(os.environ.get("FRAMEFLOW_SOAK_S") or 5)


def record_figures(fault: str, summary: SoakSummary) -> None:
    """The soak's books as a row of the README's fault table (``FRAMEFLOW_FAULT_REPORT``)."""
    FaultFigures(
        fault=fault,
        accepted=summary.frames_in,
        processed=summary.processed,
        duplicated=summary.duplicates,
        dropped={reason: count for reason, count in summary.drops.items() if count},
        lost=summary.unaccounted,
        refused=summary.refused,
    ).record()


@pytest.fixture(scope="module")
def overloaded() -> SoakSummary:
    """One soak for the module. No configured Redis: it starts its own, bounded by ``--maxmemory``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("REDIS_URL", raising=False)
        patch.delenv("REDIS_HOST", raising=False)
        return run_soak(SoakPlan(duration_s=SOAK_S, overload=10, processors=2, capacity=2, processing_ms=20))


@pytest.mark.slow
@pytest.mark.timeout(SOAK_S + 120)
def test_every_frame_is_processed_or_dropped_with_its_reason(overloaded: SoakSummary) -> None:
    summary = overloaded
    assert summary.offered_fps >= summary.plan.overload / 2 * summary.processed_fps, "the producer never overloaded"
    assert summary.refused == 0, summary.first_error
    assert summary.left_queued == 0
    assert summary.frames_in == summary.processed + sum(summary.drops.values())
    assert summary.unaccounted == 0
    assert summary.duplicates == 0
    assert summary.drops["bound"] > 0  # the queue bound is what absorbed the overload ...
    assert summary.drops["parked_waiting"] == summary.drops["parked_stale"] == 0  # ... with processors live
    record_figures(f"overload: {summary.plan.overload:g}x capacity for {summary.plan.duration_s:g} s", summary)


@pytest.mark.slow
def test_redis_memory_stays_under_its_bound(overloaded: SoakSummary) -> None:
    assert overloaded.memory_bound == parse_memory(overloaded.plan.max_memory)  # the server's own maxmemory
    assert overloaded.memory_bound_source == "server maxmemory"
    assert overloaded.memory_baseline <= overloaded.memory_peak <= overloaded.memory_bound


@pytest.mark.slow
def test_processed_frames_have_bounded_latency(overloaded: SoakSummary) -> None:
    """No frame waits behind more than a full queue: (queue bound / capacity + 2) frames' processing."""
    assert overloaded.processed > 0
    assert overloaded.latency_ms.max <= overloaded.latency_bound_ms


@pytest.mark.slow
def test_processors_work_on_the_freshest_frames(overloaded: SoakSummary) -> None:
    """Under overload a queue that drops its oldest frames holds only the newest ``queue_bound``,
    so the frames taken are about that window old, a fraction of a full queue's drain time."""
    age, summary = overloaded.age_ms, overloaded
    assert age.p95 <= summary.age_bound_ms
    assert summary.age_bound_ms < summary.plan.drain_ms / 2  # fresher than a queue that kept its oldest


@pytest.fixture(scope="module")
def overloaded_with_large_images() -> SoakSummary:
    """A short soak of 70 KB images, each for one processor and so inline in its queue entry:
    at 10x, images kept until their TTL would pass the 64 MiB bound in about a second."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("REDIS_URL", raising=False)
        patch.delenv("REDIS_HOST", raising=False)
        plan = SoakPlan(duration_s=3, overload=10, processors=2, capacity=2, processing_ms=20, image_bytes=70_000)
        return run_soak(plan)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_large_images_live_only_as_long_as_their_queue_entries(overloaded_with_large_images: SoakSummary) -> None:
    summary = overloaded_with_large_images
    expired_at_bound_s = summary.memory_bound / (summary.offered_fps * summary.plan.image_bytes)
    assert expired_at_bound_s < summary.plan.max_age_ms / 1000  # kept for their TTL, they would not fit
    assert summary.memory_bound_source == "server maxmemory"  # noeviction: a write over it is refused
    assert summary.refused == 0, summary.first_error
    assert summary.memory_baseline <= summary.memory_peak <= summary.memory_bound
    assert summary.frames_in == summary.processed + sum(summary.drops.values())
    assert summary.unaccounted == summary.left_queued == 0
    assert summary.drops["bound"] > 0
    plan = summary.plan
    fault = f"overload: {plan.overload:g}x for {plan.duration_s:g} s, {plan.image_bytes // 1000} KB images"
    record_figures(fault, summary)


@pytest.mark.slow
def test_soak_command_prints_the_books_and_leaves_a_shared_redis_clean(
    redis_url: str, redis_client: redis.Redis
) -> None:
    result = frameflow_process("--redis-url", redis_url, "soak", "--duration", "2", timeout=90)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    frames_in = int(table_row(result.stdout, "frames in")[1])
    processed = int(table_row(result.stdout, "processed")[1])
    assert frames_in > processed > 0
    assert table_row(result.stdout, "unaccounted")[1] == "0"
    assert table_row(result.stdout, "left in queues")[1] == "0"
    assert "not enforced by the server" in table_row(result.stdout, "Redis used_memory peak")[2]
    assert [key for key in redis_client.scan_iter("*soak*")] == []


@pytest.mark.slow
def test_soak_command_fails_when_memory_passes_the_bound(redis_url: str) -> None:
    result = frameflow_process("--redis-url", redis_url, "soak", "--duration", "1", "--max-memory", "1kb", timeout=90)
    assert result.returncode == 1
    assert "over the bound of 1024" in result.stderr


def test_soak_command_rejects_a_bad_memory_size(redis_url: str) -> None:
    result = frameflow(redis_url, "soak", "--max-memory", "lots")
    assert result.exit_code == 1
    assert "bad memory size 'lots'" in result.output


def test_a_claim_checked_image_lives_no_longer_than_its_frame_is_fresh(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """An image kept past its frame's max age only fills Redis: nobody will read it."""
    producer = FrameProducer(redis_url, max_age_ms=2000)
    try:
        image = bytes(CLAIM_CHECK_ABOVE + 1)  # parked and over the limit: claim-checked
        decision = producer.publish(camera_id="cam", image=image, capabilities=["nobody"], width=8, height=8)
    finally:
        producer.close()
    ttl_ms = redis_client.pttl(image_key("frameflow", decision.frame_id))
    assert 0 < ttl_ms <= 2000 + IMAGE_GRACE_MS
