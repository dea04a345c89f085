"""The benchmark's report says what the plan measured: sizes, targets and verdicts come from benchmarks/plan.py."""

from __future__ import annotations

from benchmarks.plan import TARGETS, LatencyRun, Sizes, Target, contenders, latency_runs
from benchmarks.report import Machine, markdown, target_value, verdict
from pipeline.processes.producer import PUBLISH_CHUNK

MACHINE = Machine(cpus=2, cpu_model="cpu", redis="Redis 7", python="Python 3", libraries="libs")


def report(sizes: Sizes, runs: dict, latencies: list[tuple[LatencyRun, dict | None]]) -> str:
    return markdown(contenders(sizes), runs, latencies, sizes, MACHINE, "python -m benchmarks", 1, "now")


def test_the_report_names_the_threads_chunk_and_rates_the_plan_used() -> None:
    sizes = Sizes(threads=3)
    runs = [(run, None) for run in latency_runs(sizes)]
    runs[0] = (LatencyRun("latency_1k", {**runs[0][0].params, "cameras": 4, "fps": 5}), None)
    text = report(sizes, {}, runs)
    assert "a worker of 3 threads" in text
    assert f"written {PUBLISH_CHUNK} frames per round trip" in text
    assert "4 cameras x 5 fps" in text
    assert "8 threads" not in text and "10 cameras x 30 fps for" not in text


def test_every_target_of_issue_19_is_listed_with_its_verdict() -> None:
    labels = [target.label for target in TARGETS]
    for measure in ("100 KB in+out", "1 MB in+out", "bare broker no-op completion", "publish_many", "send / stock",
                    "StubBroker", "500 processors", "100 KB frames, p99", "MEMORY USAGE"):  # fmt: skip
        assert any(measure in label for label in labels), measure
    text = report(Sizes.quick(), {"publish_many_1k": [{"send": 25_000.0}]}, [])
    assert "| publish_many, 1 KB frames/s | 25,000/s (25,000-25,000) | >= 20,000/s | met |" in text
    assert text.count("not measured") == len(TARGETS) - 1


def test_an_at_most_target_is_met_at_or_under_its_bound() -> None:
    p99 = Target("p99", ("latency_100k", "p99_ms"), None, 10.0, unit=" ms", at_most=True)
    assert verdict(target_value({"latency_100k": [{"p99_ms": 9.5}]}, p99), p99) == "met"
    assert verdict(target_value({"latency_100k": [{"p99_ms": 12.0}]}, p99), p99) == "**missed** (measured 12.00 ms)"
    assert verdict(target_value({}, p99), p99) == "not measured"


def test_a_missed_send_target_shows_what_a_bare_round_trip_measured_in_the_same_runs() -> None:
    runs = {
        "frameflow": [{"send": 8_000.0}, {"send": 9_000.0}],
        "stock": [{"send": 4_000.0}, {"send": 4_000.0}],
        "raw_single": [{"send": 10_000.0}, {"send": 11_000.0}],
    }
    text = report(Sizes.quick(), runs, [])
    row = next(line for line in text.splitlines() if line.startswith("| frameflow single-message send"))
    assert "**missed** by 29% of the target" in row
    assert "the floor (a bare redis-py round trip, no broker) measured 2.62x (2.50-2.75)" in row
    met = {**runs, "frameflow": [{"send": 12_000.0}, {"send": 13_000.0}]}
    row = next(line for line in report(Sizes.quick(), met, []).splitlines() if "single-message send" in line)
    assert row.endswith("| met |")
