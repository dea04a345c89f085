"""The CLI's views of processors and queues: ``processors``, ``queues``, and the tables ``top`` redraws
(the cameras' one too, which ``frameflow cameras`` prints).

``top`` (:mod:`.top`) and ``results`` (:mod:`.results`) are views of their own; how all of them
print is :mod:`.output`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from pipeline.domain.process_entries import ProcessEntries
from pipeline.domain.registry import ProcessorInfo, ProcessorRegistry
from pipeline.tools.overview import ParkedSnapshot, QueueSnapshot, processor_state, take_snapshot

from .camera_rows import CAMERA_COLUMNS, camera_row
from .output import age, console, plain, print_json
from .process_rows import process_listing, process_row

if TYPE_CHECKING:
    from .context import CliContext


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
