"""The run's report: a markdown block for ``docs/benchmarks.md`` and a chart for ``docs/benchmarks.png``."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from benchmarks.plan import P99_TARGET_MS, PUBLISH_BATCH, TARGETS, Contender, LatencyRun, Sizes, Target
from benchmarks.stats import Runs, Spread, ratio, spread
from pipeline.processes.producer import PUBLISH_CHUNK

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
    if unit == "x":
        return f"{value.median:.2f}x ({value.low:.2f}-{value.high:.2f})"
    digits = 0 if unit == " B" else 2
    if len({value.low, value.median, value.high}) == 1:
        return f"{value.median:,.{digits}f}{unit}"
    return f"{value.median:,.{digits}f}{unit} ({value.low:,.{digits}f}-{value.high:,.{digits}f})"


def _wanted(target: Target) -> str:
    bound = f"{target.minimum:,.0f}/s" if target.unit == "/s" else f"{target.minimum:g}{target.unit}"
    return f"<= {bound}" if target.at_most else f">= {bound}"


def _size(size: float) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size:g} B"


def target_value(runs: Runs, target: Target) -> Spread | None:
    if target.denominator is None:
        return spread(runs, *target.numerator)
    return ratio(runs, target.numerator, target.denominator)


def verdict(value: Spread | None, target: Target, floor: Spread | None = None) -> str:
    """``met``, or how far from the target (and, with ``floor``, how far the floor itself was)."""
    if value is None:
        return "not measured"
    if target.at_most:
        if value.median <= target.minimum:
            return "met"
        return f"**missed** (measured {_ratio(value, target.unit)})"
    if value.median >= target.minimum:
        return "met"
    short = (1 - value.median / target.minimum) * 100
    missed = f"**missed** by {short:.0f}% of the target"
    if floor is None:
        return missed
    return f"{missed}; the floor (a bare redis-py round trip, no broker) measured {_ratio(floor, target.unit)}"


def markdown(
    contenders: list[Contender],
    runs: Runs,
    latencies: list[tuple[LatencyRun, dict[str, float] | None]],
    sizes: Sizes,
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
    pipelined = [
        f"{contender.params['batch']} ({_size(contender.params['size'])})"
        for contender in contenders
        if contender.case == "raw" and not contender.params.get("single")
    ]
    lines += [
        "",
        "*send*: one message (frame) per call, the caller waiting until Redis has it (`publish_many`: batches of "
        f"{PUBLISH_BATCH:,}, written {PUBLISH_CHUNK} frames per round trip); raw redis-py: pipelined, "
        f"{', '.join(pipelined) or '-'} per round trip. *complete*: a worker of {sizes.threads} threads "
        "(raw: one reader) from a full queue until every message ran and its ack landed (pipeline: every result "
        "is on the result stream). *in + out*: 1 / (1/send + 1/complete).",
        "",
        "#### Targets (issues 7 and 19): ratios of runs made side by side, median (min-max)",
        "",
        "| target | measured | wanted | verdict |",
        "| --- | ---: | ---: | --- |",
    ]
    for target in TARGETS:
        value = target_value(runs, target)
        floor = ratio(runs, target.floor, target.denominator) if target.floor and target.denominator else None
        lines.append(
            f"| {target.label} | {_ratio(value, target.unit)} | {_wanted(target)} | {verdict(value, target, floor)} |"
        )
    lines += _latency_lines(latencies)
    lines += ["", "![throughput and latency](benchmarks.png)", END]
    return "\n".join(lines) + "\n"


def _latency_lines(latencies: list[tuple[LatencyRun, dict[str, float] | None]]) -> list[str]:
    if not latencies:
        return []
    params = latencies[0][0].params
    title = (
        f"#### Latency: {params['cameras']} cameras x {params['fps']} fps for {params['duration_s']:g} s, "
        "no-op processor in its own process"
    )
    lines = [
        "",
        title,
        "",
        "| frame | frames | rate | p50 | p95 | p99 | max | missing | used_memory before | drained (results kept) "
        "| after (result stream deleted) | keys before | keys after | RSS before | RSS after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run, figures in latencies:
        size = _size(run.params["size"])
        if figures is None:
            lines.append(f"| {size} | not run |" + " |" * 13)
            continue
        lines.append(
            f"| {size} | {figures['frames']:,.0f} | {figures['rate']:.1f}/s "
            + "".join(f"| {figures[key]:.2f} ms " for key in ("p50_ms", "p95_ms", "p99_ms"))
            + f"| {figures['max_ms']:.1f} ms | {figures['missing']:.0f} "
            + "".join(f"| {figures[key]:,.0f} B " for key in ("memory_before", "memory_drained", "memory_after"))
            + "".join(f"| {figures.get(key, 0):,.0f} B " for key in ("kept_before", "kept_after"))
            + "".join(f"| {figures.get(key, 0) / 2**20:,.1f} MiB " for key in ("rss_before", "rss_after"))
            + "|"
        )
    lines += [
        "",
        "End to end is capture timestamp to the result's arrival at a reader blocked on the result stream. "
        f"Targets (above): p99 <= {P99_TARGET_MS:g} ms, and what Redis keeps (*keys*: every key's MEMORY USAGE, "
        "the result stream deleted) back to its starting level once drained; used_memory also moves with the "
        "clients' buffers. RSS is the cameras' and the processor's processes together, for the record (Python "
        "keeps freed memory for reuse).",
    ]
    return lines


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


def write_chart(
    path: Path,
    contenders: list[Contender],
    runs: Runs,
    latencies: list[tuple[LatencyRun, dict[str, float] | None]],
) -> None:
    """Send and completion rates per contender (log scale, min-max whiskers) and the latency percentiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [(run, figures) for run, figures in latencies if figures is not None]
    panels = 3 if measured else 2
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
    if measured:
        keys = ["p50_ms", "p95_ms", "p99_ms"]
        width = 0.8 / len(measured)
        for index, (run, figures) in enumerate(measured):
            offsets = [position + index * width for position in range(len(keys))]
            axes[2].bar(offsets, [figures[key] for key in keys], width, label=_size(run.params["size"]))
        axes[2].set_xticks([position + 0.4 - width / 2 for position in range(len(keys))])
        axes[2].set_xticklabels([key.split("_")[0] for key in keys])
        axes[2].axhline(P99_TARGET_MS, color="tab:red", linestyle="--", label="target p99")
        axes[2].set_title(f"pipeline latency at {measured[0][0].rate} frames/s (ms)")
        axes[2].legend()
    figure.savefig(path, dpi=110)
    plt.close(figure)
