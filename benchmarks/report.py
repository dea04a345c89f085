"""The run's report: a markdown block for ``docs/benchmarks.md`` and a chart for ``docs/benchmarks.png``."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from benchmarks.plan import TARGETS, Contender, Target
from benchmarks.stats import Runs, Spread, ratio, spread

#: The generated part of docs/benchmarks.md lies between these lines; the rest of the file is kept.
BEGIN = "<!-- benchmark results: written by `python -m benchmarks`, do not edit by hand -->"
END = "<!-- end of benchmark results -->"


@dataclass(frozen=True)
class Machine:
    cpus: int
    cpu_model: str
    redis: str
    python: str
    libraries: str

    @classmethod
    def describe(cls, redis_version: str, redis_origin: str) -> Machine:
        model = "unknown CPU"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            model = platform.processor() or model
        versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("dramatiq", "redis", "hiredis", "orjson"))
        return cls(
            cpus=os.cpu_count() or 0,
            cpu_model=model,
            redis=f"Redis {redis_version} ({redis_origin}, TCP loopback)",
            python=f"Python {platform.python_version()} on {platform.system()} {platform.release()}",
            libraries=versions,
        )


def _rate(value: Spread | None) -> str:
    if value is None:
        return "-"
    return f"{value.median:,.0f} ({value.low:,.0f}-{value.high:,.0f})"


def _us(value: Spread | None) -> str:
    return "-" if value is None else f"{value.median:.0f}"


def _ratio(value: Spread | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "/s":
        return f"{value.median:,.0f}/s ({value.low:,.0f}-{value.high:,.0f})"
    return f"{value.median:.2f}x ({value.low:.2f}-{value.high:.2f})"


def target_value(runs: Runs, target: Target) -> Spread | None:
    if target.denominator is None:
        return spread(runs, *target.numerator)
    return ratio(runs, target.numerator, target.denominator)


def verdict(value: Spread | None, target: Target) -> str:
    if value is None:
        return "not measured"
    if value.median >= target.minimum:
        return "met"
    short = (1 - value.median / target.minimum) * 100
    return f"**missed** by {short:.0f}% of the target"


def markdown(
    contenders: list[Contender],
    runs: Runs,
    latency: dict[str, float] | None,
    latency_params: dict[str, float],
    machine: Machine,
    command: str,
    run_count: int,
    started: str,
) -> str:
    lines = [
        BEGIN,
        f"### Run of {started}",
        "",
        f"Command: `{command}` ({run_count} runs of each contender, alternated, each in a fresh process).",
        "",
        f"Machine: {machine.cpus} CPUs ({machine.cpu_model}), {machine.redis}, {machine.python}; {machine.libraries}.",
        f"Figures are from a {machine.cpus}-core machine that Redis, the measured process and other work share.",
        "",
        "#### Throughput: messages (frames) per second, median (min-max)",
        "",
        "| contender | send | complete | in + out | client CPU µs per message (send / complete) "
        "| Redis CPU µs per message (send / complete) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for contender in contenders:
        name = contender.name

        def figure(metric: str, contender_name: str = name) -> Spread | None:
            return spread(runs, contender_name, metric)

        lines.append(
            f"| {contender.label} | {_rate(figure('send'))} | {_rate(figure('complete'))} | {_rate(figure('through'))} "
            f"| {_us(figure('send_cpu_us'))} / {_us(figure('complete_cpu_us'))} "
            f"| {_us(figure('send_redis_cpu_us'))} / {_us(figure('complete_redis_cpu_us'))} |"
        )
    lines += [
        "",
        "*send*: one message (frame) per call, the caller waiting until Redis has it (`publish_many`: batches of "
        "1,000, written 64 frames per round trip); raw redis-py: pipelined, 100 (1 KB) or 10 (100 KB) per round trip. "
        "*complete*: a worker of 8 threads (raw: one reader) from a full queue until every message ran and its ack "
        "landed (pipeline: every result is on the result stream). *in + out*: 1 / (1/send + 1/complete).",
        "",
        "#### Targets: ratios of runs made side by side, median (min-max)",
        "",
        "| target | measured | wanted | verdict |",
        "| --- | ---: | ---: | --- |",
    ]
    for target in TARGETS:
        value = target_value(runs, target)
        wanted = f">= {target.minimum:,.0f}/s" if target.unit == "/s" else f">= {target.minimum:g}x"
        lines.append(f"| {target.label} | {_ratio(value, target.unit)} | {wanted} | {verdict(value, target)} |")
    lines += _latency_lines(latency, latency_params)
    lines += ["", "![throughput and latency](benchmarks.png)", END]
    return "\n".join(lines) + "\n"


def _latency_lines(latency: dict[str, float] | None, params: dict[str, float]) -> list[str]:
    title = (
        f"#### Latency: {params['cameras']:.0f} cameras x {params['fps']:.0f} fps for {params['duration_s']:.0f} s, "
        "1 KB frames, no-op processor in its own process"
    )
    if latency is None:
        return ["", title, "", "Not run."]
    p99_ok = "met" if latency["p99_ms"] <= 10 else f"**missed** (target <= 10 ms, measured {latency['p99_ms']:.1f} ms)"
    drift = latency["memory_after"] - latency["memory_before"]
    memory_ok = "met" if drift <= 0 else f"**missed** by {drift:,.0f} bytes"
    return [
        "",
        title,
        "",
        "| frames | rate | p50 | p95 | p99 | max | missing | used_memory before | drained (results kept) "
        "| after (result stream deleted) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {latency['frames']:,.0f} | {latency['rate']:.1f}/s "
        + "".join(f"| {latency[key]:.2f} ms " for key in ("p50_ms", "p95_ms", "p99_ms"))
        + f"| {latency['max_ms']:.1f} ms | {latency['missing']:.0f} "
        + "".join(f"| {latency[key]:,.0f} B " for key in ("memory_before", "memory_drained", "memory_after"))
        + "|",
        "",
        f"End to end is capture timestamp to the result's arrival at a reader blocked on the result stream. "
        f"p99 <= 10 ms: {p99_ok}. Memory back to its starting level once drained: {memory_ok} "
        f"({drift:+,.0f} bytes).",
    ]


def write_markdown(path: Path, block: str) -> None:
    """Replace the generated block of ``path`` (or append one), keeping everything else."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + block.rstrip("\n") + after
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def write_chart(path: Path, contenders: list[Contender], runs: Runs, latency: dict[str, float] | None) -> None:
    """Send and completion rates per contender (log scale, min-max whiskers) and the latency percentiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if latency else 2
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 5.5), constrained_layout=True)
    for axis, metric, title in ((axes[0], "send", "send (per s)"), (axes[1], "complete", "complete (per s)")):
        names, medians, errors = [], [], [[], []]
        for contender in contenders:
            value = spread(runs, contender.name, metric)
            if value is None:
                continue
            names.append(contender.name)
            medians.append(value.median)
            errors[0].append(value.median - value.low)
            errors[1].append(value.high - value.median)
        colors = [
            "tab:orange" if name.startswith(("pipeline", "frameflow", "publish")) else "tab:gray" for name in names
        ]
        axis.barh(names, medians, xerr=errors, color=colors)
        axis.set_xscale("log")
        axis.set_title(title)
        axis.invert_yaxis()
        for index, median in enumerate(medians):
            axis.text(median, index, f" {median:,.0f}", va="center", fontsize=8)
    if latency:
        keys = ["p50_ms", "p95_ms", "p99_ms"]
        axes[2].bar([key.split("_")[0] for key in keys], [latency[key] for key in keys], color="tab:orange")
        axes[2].axhline(10, color="tab:red", linestyle="--", label="target p99")
        axes[2].set_title("pipeline latency at 300 frames/s (ms)")
        axes[2].legend()
    figure.savefig(path, dpi=110)
    plt.close(figure)
