"""``frameflow top``: a live view of processors, queues and cameras, refreshed until Ctrl-C.

It redraws the ``processors``, ``queues`` and ``cameras`` commands' tables (:mod:`.inspect`) from
one snapshot of the pipeline each refresh, with a header that sums them up.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Group
from rich.live import Live

from pipeline.cameras.state import CameraStateStore
from pipeline.tools.overview import PipelineSnapshot, processing_rates, take_snapshot

from .inspect import cameras_table, parked_table, processors_table, queues_table
from .output import console, until_interrupted

if TYPE_CHECKING:
    from .context import CliContext


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
