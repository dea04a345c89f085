"""The CLI's read-only views: ``processors``, ``queues``, ``top``, ``results``, and how they (and the cameras) print."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from pipeline.cameras.state import CameraStateStore
from pipeline.domain.process_entries import ProcessEntries
from pipeline.domain.registry import BREAKER_CLOSED, ProcessorInfo, ProcessorRegistry
from pipeline.domain.results import RESULT_FIELDS, result_problem
from pipeline.tools.overview import ParkedSnapshot, PipelineSnapshot, QueueSnapshot, processing_rates, take_snapshot

from .camera_rows import CAMERA_COLUMNS, camera_row
from .process_rows import process_listing, process_row

if TYPE_CHECKING:
    import redis

    from .context import CliContext

#: How wide a table may grow when output goes to a pipe or a file: rich's 80 columns would
#: squeeze, wrap or drop columns of ``frameflow processors | cat``, and no terminal limits it there.
PIPED_WIDTH = 1000


def _console(**options: Any) -> Console:
    """A console for the CLI; not a terminal and no ``COLUMNS``: wide enough for every table's columns."""
    made = Console(highlight=False, soft_wrap=True, **options)
    if not made.is_terminal and not os.environ.get("COLUMNS"):
        made.width = PIPED_WIDTH
    return made


console = _console()
err_console = _console(stderr=True)


# -- formatting ------------------------------------------------------------------------------
def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def processor_state(info: ProcessorInfo, now: float | None = None) -> str:
    if not info.alive:
        return "dead"
    states = ["stale"] if info.is_stale(now) else []  # killed or stalled: not reaped yet
    if info.draining:
        states.append("draining")
    if info.breaker != BREAKER_CLOSED:
        states.append(f"breaker {info.breaker.replace('_', '-')}")
    return ", ".join(states) or "live"


def printable(value: object) -> str:
    """``value`` as text with control characters shown as escapes: dead letters and results hold
    whatever was written to a stream, and ``\x1b[2J`` would clear the operator's terminal."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def plain(value: object) -> str:
    """:func:`printable`, with rich markup escaped too (a field named ``[/]`` made rich raise MarkupError)."""
    return escape(printable(value))


def print_json(value: Any) -> None:
    """JSON on stdout as is (never wrapped or marked up)."""
    click.echo(json.dumps(value, indent=2, default=str))


@contextlib.contextmanager
def until_interrupted() -> Iterator[None]:
    """Run a long-lived view until Ctrl-C or SIGTERM, then end normally (exit code 0)."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def processors_table(
    infos: list[ProcessorInfo],
    rates: dict[str, float] | None = None,
    processes: dict[str, list[ProcessorInfo]] | None = None,
) -> Table:
    """One row per processor; under a processor run as several processes, one indented row
    per process (``└ pid N``: its own counters, heartbeat and host), from ``processes``."""
    now = time.time()
    processes = processes or {}
    table = Table(title="processors", title_justify="left")
    counters = ("capacity", "in flight", "processed", "failed", "rejected")
    for name in ("processor", "capabilities", "capacity", "state", "in flight", "processed", "failed", "rejected"):
        table.add_column(name, justify="right" if name in counters else "left")
    if rates is not None:
        table.add_column("frames/s", justify="right")
    table.add_column("latency ms", justify="right")
    table.add_column("heartbeat", justify="right")
    table.add_column("host")
    for info in infos:
        if not info.alive:
            row = [info.processor_id, "-", "-", "dead", "-", "-", "-", "-", *(["-"] if rates is not None else []), "-"]
            table.add_row(*row, "-", "-")
            continue
        row = [
            info.processor_id,
            ", ".join(info.capabilities),
            str(info.capacity),
            processor_state(info, now),
            str(info.in_flight),
            str(info.processed),
            str(info.failed),
            str(info.rejected),
        ]
        if rates is not None:
            rate = rates.get(info.processor_id)
            row.append("-" if rate is None else f"{rate:.1f}")
        own = processes.get(info.processor_id, [])
        several = own if len(own) > 1 else []
        host = f"{len(several)} processes" if several else f"{info.host}:{info.pid}"
        row += [f"{info.latency_ms:.1f}", age(now - info.heartbeat_at) + " ago", host]
        table.add_row(*row)
        for process in several:
            heartbeat = age(now - process.heartbeat_at) + " ago"
            state = processor_state(process)
            table.add_row(*process_row(process, state=state, heartbeat=heartbeat, with_rate=rates is not None))
    return table


def queues_table(snapshots: list[QueueSnapshot]) -> Table:
    table = Table(title="queues", title_justify="left")
    table.add_column("queue")
    table.add_column("processor")
    for name in ("backlog", "pending", "consumers", "oldest", "delayed", "dead letters", "dropped"):
        table.add_column(name, justify="right")
    for queue in snapshots:
        table.add_row(
            queue.queue_name,
            queue.processor_id or "-",
            str(queue.backlog),
            str(queue.pending),
            str(queue.consumers),
            age(queue.oldest_age_s),
            str(queue.delayed),
            str(queue.dead_letters),
            str(queue.dropped),
        )
    return table


def parked_table(parked: list[ParkedSnapshot]) -> Table:
    table = Table(
        title="parked frames", title_justify="left", caption="waiting for a live processor with the capability"
    )
    table.add_column("capability")
    table.add_column("frames", justify="right")
    table.add_column("oldest", justify="right")
    for item in parked:
        table.add_row(item.capability, str(item.frames), age(item.oldest_age_s))
    return table


# -- processors, queues ----------------------------------------------------------------------
@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def processors(obj: CliContext, as_json: bool) -> None:
    """Every registered processor: capabilities, capacity, state, counters, heartbeat age, host;
    under a processor run as several processes, one row per process."""
    infos = ProcessorRegistry(obj.client(), obj.namespace).list(include_dead=True)
    processes = ProcessEntries(obj.client(), obj.namespace).of_each(info.processor_id for info in infos if info.alive)
    if as_json:
        print_json(
            [
                {
                    **dataclasses.asdict(info),
                    "state": processor_state(info),
                    "processes": process_listing(processes.get(info.processor_id, [])),
                }
                for info in infos
            ]
        )
    elif not infos:
        console.print("no processors registered")
    else:
        console.print(processors_table(infos, processes=processes))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_obj
def queues(obj: CliContext, as_json: bool) -> None:
    """Every queue: backlog, pending, consumers, oldest entry, delayed, dead letters, drops; parked frames."""
    snapshot = take_snapshot(obj.client(), obj.namespace)
    if as_json:
        print_json(
            {
                "queues": [{**dataclasses.asdict(queue), "dropped": queue.dropped} for queue in snapshot.queues],
                "parked": [dataclasses.asdict(item) for item in snapshot.parked],
            }
        )
        return
    if not snapshot.queues and not snapshot.parked:
        console.print("no queues yet")
    if snapshot.queues:
        console.print(queues_table(snapshot.queues))
    if snapshot.parked:
        console.print(parked_table(snapshot.parked))


def cameras_table(states: list[dict[str, Any]]) -> Table:
    """The cameras' state as ``frameflow cameras run`` writes it (``frameflow cameras``, ``frameflow top``)."""
    table = Table(title="cameras")
    for column in CAMERA_COLUMNS:
        table.add_column(column, justify="right" if column.startswith(("fps", "reconnects")) else "left")
    for state in states:
        table.add_row(*camera_row(state, age=age, text=plain))
    return table


# -- top -------------------------------------------------------------------------------------
@click.command()
@click.option(
    "--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.05), help="Seconds between refreshes."
)
@click.option(
    "--iterations",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Refreshes, then exit (0: until Ctrl-C).",
)
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@click.pass_obj
def top(obj: CliContext, interval: float, iterations: int, once: bool) -> None:
    """A live view of processors (frames/s, latency, in flight) and queues (backlog, pending, dead letters)."""
    client = obj.client()
    snapshot = take_snapshot(client, obj.namespace)
    if once:
        console.print(_top_view(obj, snapshot))
        return
    with until_interrupted(), Live(_top_view(obj, snapshot), console=console, auto_refresh=False) as live:
        shown = 1
        while not iterations or shown < iterations:
            time.sleep(interval)  # the refresh period, not a wait for anything
            live.update(_top_view(obj, take_snapshot(client, obj.namespace)), refresh=True)
            shown += 1
    if not console.is_terminal:
        console.line()


def _top_view(obj: CliContext, snapshot: PipelineSnapshot) -> Group:
    rates = processing_rates(snapshot)
    dead = sum(1 for info in snapshot.processors if not info.alive)
    stale = sum(1 for info in snapshot.processors if info.is_stale(snapshot.at))
    header = (
        f"[bold]frameflow top[/]  {obj.masked_url}  {datetime.fromtimestamp(snapshot.at):%H:%M:%S}  "
        f"processors: {len(snapshot.processors) - dead - stale} live, {stale} stale, {dead} dead  "
        f"frames/s: {sum(rates.values()):.1f}  backlog: {sum(q.backlog for q in snapshot.queues)}  "
        f"dead letters: {sum(q.dead_letters for q in snapshot.queues)}"
    )
    parts: list[Any] = [header, processors_table(snapshot.processors, rates), queues_table(snapshot.queues)]
    if snapshot.parked:
        parts.append(parked_table(snapshot.parked))
    cameras = CameraStateStore(obj.client(), obj.namespace).read()
    if cameras:
        parts.append(cameras_table(cameras))
    return Group(*parts)


# -- results ---------------------------------------------------------------------------------
@click.command()
@click.argument("streams", nargs=-1, required=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing results as they arrive, until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--last",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Recent results to print first, per stream.",
)
@click.option(
    "--limit",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Exit after this many results (0: no limit).",
)
@click.pass_obj
def results(obj: CliContext, streams: tuple[str, ...], follow: bool, as_json: bool, last: int, limit: int) -> None:
    """Print results from result STREAMs (e.g. samples:processed), the recent ones then, with --follow, new ones.

    Reading does not consume: it uses plain XREAD, so it never takes a result
    from the consumer groups of the services that act on them.
    """
    client = obj.client()
    seen: list[dict[str, str]] = []
    skipped = 0
    with until_interrupted():
        for stream, entry_id, raw in _read_results(client, list(streams), follow, last):
            problem = result_problem(raw)
            if problem is not None:  # anything can be written to a stream: say so and go on
                skipped += 1
                err_console.print(f"skipped entry {entry_id} of {plain(stream)}: {plain(problem)}")
                continue
            fields = _text(raw)
            seen.append(fields)
            if as_json:
                click.echo(json.dumps({"stream": stream, "id": entry_id, **typed(fields)}))
            else:
                click.echo(_result_line(stream, entry_id, fields))
            if limit and len(seen) >= limit:
                break
    if not as_json:
        console.print(plain(_results_summary(seen, streams)))
    if skipped:
        err_console.print(f"skipped {skipped} malformed result entries")


def _read_results(
    client: redis.Redis, streams: list[str], follow: bool, last: int
) -> Iterator[tuple[str, str, dict[bytes, bytes]]]:
    cursors: dict[str, str] = {}
    for stream in streams:
        recent = list(reversed(client.xrevrange(stream, count=last))) if last else []
        for entry_id, fields in recent:
            yield stream, entry_id.decode(), fields
        # From the newest entry seen (or the stream's start), so nothing added meanwhile is missed.
        cursors[stream] = recent[-1][0].decode() if recent else _last_id(client, stream)
    while follow:
        for stream_name, entries in client.xread(cursors, block=1000) or []:
            stream = stream_name.decode()
            for entry_id, fields in entries:
                cursors[stream] = entry_id.decode()
                yield stream, cursors[stream], fields


def _last_id(client: redis.Redis, stream: str) -> str:
    newest = client.xrevrange(stream, count=1)
    return newest[0][0].decode() if newest else "0-0"


def _text(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in fields.items()}  # result_problem checked UTF-8


#: Result fields that stay text in ``results --json`` whatever they look like (ids, times).
TEXT_FIELDS = frozenset(("frame_id", "camera_id", "processor_id", "timestamp", "captured_at"))

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def typed(fields: dict[str, str]) -> dict[str, Any]:
    """A result's fields with the types its processor returned: a result entry is flat text
    (numbers as digits, nested values and booleans as JSON), so numbers become numbers, JSON
    objects, lists, ``true``/``false``/``null`` their values; ids and times stay text."""
    return {name: value if name in TEXT_FIELDS else _typed_value(value) for name, value in fields.items()}


def _typed_value(text: str) -> Any:
    if text[:1] in ("{", "[") or text in ("true", "false", "null") or _JSON_NUMBER.fullmatch(text):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _result_line(stream: str, entry_id: str, fields: dict[str, str]) -> str:
    try:
        when = datetime.fromisoformat(fields["timestamp"]).astimezone()
    except (KeyError, ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved to local time
        when = datetime.fromtimestamp(int(entry_id.split("-")[0]) / 1000)
    extra = " ".join(f"{name}={value}" for name, value in fields.items() if name not in RESULT_FIELDS)
    return printable(
        f"{when:%H:%M:%S}.{when.microsecond // 1000:03d}  {stream}  {fields.get('processor_id', '-')}  "
        f"camera={fields.get('camera_id', '-')}  frame={fields.get('frame_id', '-')}  "
        f"latency={fields.get('latency_ms', '-')}ms  {extra}"
    ).rstrip()


def _results_summary(seen: list[dict[str, str]], streams: tuple[str, ...]) -> str:
    if not seen:
        return f"no results on {', '.join(streams)}"
    latencies = sorted(float(fields["latency_ms"]) for fields in seen if _is_number(fields.get("latency_ms")))
    by_processor = Counter(fields.get("processor_id", "-") for fields in seen)
    text = f"{len(seen)} result(s) from " + ", ".join(f"{name} {count}" for name, count in sorted(by_processor.items()))
    if latencies:
        p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
        text += f"; processing latency p50 {statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms"
    return text


def _is_number(value: str | None) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
