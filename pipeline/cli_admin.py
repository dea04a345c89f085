"""The CLI's commands that change something: ``dlq``, ``deregister``, ``drain``, ``enqueue``."""

from __future__ import annotations

import itertools
import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .cli_inspect import age, console, err_console, plain, print_json, until_interrupted
from .dead_letters import DeadLetter, DeadLetterQueue
from .errors import FrameflowError, UnknownDeadLetter, UnknownProcessor
from .keys import queue_keys
from .overview import resolve_queue
from .registry import ProcessorInfo, ProcessorRegistry

if TYPE_CHECKING:
    from .cli import CliContext

#: Longer field values are shown by their length in ``dlq show``.
SHOWN_VALUE_CHARS = 160


# -- dead letters ----------------------------------------------------------------------------
@click.group()
def dlq() -> None:
    """Dead letters of a QUEUE (its name, e.g. frames.ready.sample-1, or its stream): list, show, requeue, purge."""


@dlq.command("list")
@click.argument("queue")
@click.option(
    "--limit", default=100, show_default=True, type=click.IntRange(min=1), help="Oldest first, at most this many."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def dlq_list(obj: CliContext, queue: str, limit: int, as_json: bool) -> None:
    """The dead letters of QUEUE with their reasons, oldest first."""
    queue_name, letters = _dead_letters(obj, queue)
    shown = letters.list(count=limit)
    if as_json:
        print_json([_letter_json(letter) for letter in shown])
        return
    if not shown:
        console.print(f"no dead letters in {queue_name}")
        return
    now = time.time()
    table = Table(title=f"dead letters of {queue_name} ({len(letters)})", title_justify="left")
    for name in ("entry", "dead for", "actor", "message", "reason"):
        table.add_column(name, overflow="fold")
    for letter in shown:
        message = letter.message
        table.add_row(  # plain(): a dead letter holds whatever was written to the queue
            letter.entry_id,
            age(now - letter.dead_at_ms / 1000),
            plain(message.actor_name) if message else "-",
            plain(message.message_id) if message else "(malformed entry)",
            plain(letter.reason),
        )
    console.print(table)


@dlq.command("show")
@click.argument("queue")
@click.argument("entry_id", required=False)
@click.pass_obj
def dlq_show(obj: CliContext, queue: str, entry_id: str | None) -> None:
    """One dead letter of QUEUE in full (ENTRY_ID from `dlq list`; default: the oldest)."""
    queue_name, letters = _dead_letters(obj, queue)
    if entry_id is None:
        oldest = letters.list(count=1)
        if not oldest:
            console.print(f"no dead letters in {queue_name}")
            return
        letter = oldest[0]
    else:
        found = letters.get(entry_id)
        if found is None:
            raise UnknownDeadLetter(f"no dead letter {entry_id!r} in {queue_name} (frameflow dlq list {queue_name})")
        letter = found
    table = Table(title=f"dead letter {letter.entry_id} of {queue_name}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    dead_at = datetime.fromtimestamp(letter.dead_at_ms / 1000, UTC)
    table.add_row("reason", plain(letter.reason))
    table.add_row("dead at", f"{dead_at.isoformat()} ({age(time.time() - dead_at.timestamp())} ago)")
    message = letter.message
    if message is not None:
        table.add_row("message id", plain(message.message_id))
        table.add_row("actor", plain(message.actor_name))
        table.add_row("options", plain(json.dumps(message.options, sort_keys=True, default=str)))
        for index, arg in enumerate(message.args):
            if isinstance(arg, dict):
                for name, value in arg.items():
                    table.add_row(f"args[{index}].{plain(name)}", _shown(value))
            else:
                table.add_row(f"args[{index}]", _shown(arg))
        if message.kwargs:
            table.add_row("kwargs", _shown(json.dumps(message.kwargs, default=str)))
    else:
        for name, value in letter.fields.items():
            if not name.startswith("dead_"):
                table.add_row(plain(name), _shown(value))
    console.print(table)


@dlq.command("requeue")
@click.argument("queue")
@click.argument("entry_ids", nargs=-1)
@click.pass_obj
def dlq_requeue(obj: CliContext, queue: str, entry_ids: tuple[str, ...]) -> None:
    """Put dead letters of QUEUE back on it: the ENTRY_IDS given, or all of them."""
    queue_name, letters = _dead_letters(obj, queue)
    missing = [entry_id for entry_id in entry_ids if letters.get(entry_id) is None]
    if missing:
        raise UnknownDeadLetter(
            f"no dead letter {', '.join(missing)} in {queue_name} (frameflow dlq list {queue_name})"
        )
    count = letters.requeue(list(entry_ids) if entry_ids else None)
    console.print(f"requeued {count} dead letter(s) to {queue_name}")


@dlq.command("purge")
@click.argument("queue")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def dlq_purge(obj: CliContext, queue: str, yes: bool) -> None:
    """Delete every dead letter of QUEUE."""
    queue_name, letters = _dead_letters(obj, queue)
    if not yes:
        click.confirm(f"Delete the {len(letters)} dead letter(s) of {queue_name}?", abort=True)
    console.print(f"purged {letters.purge()} dead letter(s) of {queue_name}")


def _dead_letters(obj: CliContext, queue: str) -> tuple[str, DeadLetterQueue]:
    queue_name = resolve_queue(obj.client(), obj.namespace, queue)
    return queue_name, obj.broker().dead_letter_queue(queue_name)


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    message = letter.message
    return {
        "entry_id": letter.entry_id,
        "queue_name": letter.queue_name,
        "reason": letter.reason,
        "dead_at_ms": letter.dead_at_ms,
        "message_id": message.message_id if message else None,
        "actor_name": message.actor_name if message else None,
    }


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return plain(text) if len(text) <= SHOWN_VALUE_CHARS else f"<{len(text)} characters>"


# -- processors ------------------------------------------------------------------------------
@click.command()
@click.argument("processor_id")
@click.pass_obj
def deregister(obj: CliContext, processor_id: str) -> None:
    """Remove PROCESSOR_ID from the registry.

    A dead processor's queued frames are re-routed to live peers at once (what the
    scheduler would do). A live processor registers again at its next heartbeat:
    to stop routing to a running processor, use `frameflow drain`.
    """
    registry = ProcessorRegistry(obj.client(), obj.namespace)
    info = _known(registry, processor_id, live_only=False)
    registry.deregister(processor_id)
    if info is not None:
        console.print(
            f"deregistered {processor_id}; it is alive (heartbeat {age(time.time() - info.heartbeat_at)} ago) "
            f"and registers again at its next heartbeat unless it is stopped; its queue is left to it"
        )
        return
    from middleware.routing import CapabilityRouter

    from .scheduler import PipelineScheduler

    rerouted = PipelineScheduler(obj.broker(CapabilityRouter())).reap(processor_id)
    if rerouted is None:
        console.print(f"deregistered {processor_id}; a scheduler is re-routing its queued frames")
    else:
        console.print(f"deregistered {processor_id}; re-routed {rerouted} queued frame(s) to live peers")


@click.command()
@click.argument("processor_id")
@click.option("--resume", is_flag=True, help="Route frames to it again.")
@click.option("--wait", is_flag=True, help="Wait until its queue is empty.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds --wait waits at most.")
@click.pass_obj
def drain(obj: CliContext, processor_id: str, resume: bool, wait: bool, timeout: float) -> None:
    """Stop routing frames to PROCESSOR_ID; it keeps processing what is already queued for it."""
    client = obj.client()
    registry = ProcessorRegistry(client, obj.namespace)
    info = _known(registry, processor_id, live_only=True)
    assert info is not None
    registry.update(processor_id, draining=not resume)
    if resume:
        console.print(f"resumed {processor_id}: frames are routed to it again")
        return
    stream = queue_keys(obj.namespace, info.queue_name).stream
    console.print(f"draining {processor_id}: no new frames are routed to it; {client.xlen(stream)} still queued for it")
    if not wait:
        return
    deadline = time.monotonic() + timeout
    while (left := client.xlen(stream)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        raise FrameflowError(f"{processor_id} still has {left} frame(s) queued after {timeout:g}s")
    console.print(f"drained {processor_id}: its queue is empty")


def _known(registry: ProcessorRegistry, processor_id: str, *, live_only: bool) -> ProcessorInfo | None:
    """The live entry of ``processor_id`` (None for a dead but registered one, unless ``live_only``)."""
    info = registry.get(processor_id)
    if info is not None or (not live_only and processor_id in registry.known_ids()):
        return info
    live = [item.processor_id for item in registry.list()]
    known = f"live processors: {', '.join(live)}" if live else "no processor is live"
    raise UnknownProcessor(f"unknown processor {processor_id!r} ({known})")


# -- frames ----------------------------------------------------------------------------------
@click.command()
@click.option("--camera-id", default="cam-1", show_default=True, help="The camera the frames come from.")
@click.option(
    "--source",
    "source_spec",
    default="synthetic",
    show_default=True,
    help="'synthetic' (generated JPEGs), a folder of images, an image file or a video file.",
)
@click.option(
    "--capability", "capabilities", multiple=True, required=True, help="A capability the frames need; repeat for more."
)
@click.option("--rate", default=5.0, show_default=True, help="Frames per second.")
@click.option(
    "--count",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Frames to send (0: until the source ends; the synthetic camera never does).",
)
@click.option("--loop", is_flag=True, help="Replay a folder or a video from the start when it ends.")
@click.option("--width", default=320, show_default=True, help="Width of synthetic frames.")
@click.option("--height", default=240, show_default=True, help="Height of synthetic frames.")
@click.option(
    "--quality",
    default=85,
    show_default=True,
    type=click.IntRange(1, 95),
    help="JPEG quality of generated and decoded frames.",
)
@click.option(
    "--max-age-ms",
    default=5000,
    show_default=True,
    type=click.IntRange(min=1),
    help="How long a frame stays worth processing.",
)
@click.pass_obj
def enqueue(
    obj: CliContext,
    camera_id: str,
    source_spec: str,
    capabilities: tuple[str, ...],
    rate: float,
    count: int,
    loop: bool,
    width: int,
    height: int,
    quality: int,
    max_age_ms: int,
) -> None:
    """Publish frames from a source at a rate, routed by capability; shows sent / routed / parked / dropped."""
    from .producer import FrameProducer
    from .sources import open_source

    if not (math.isfinite(rate) and rate > 0):
        raise click.ClickException(f"bad rate {rate:g}: give frames per second above 0, e.g. --rate 5")
    source = open_source(source_spec, width=width, height=height, loop=loop, quality=quality)
    producer = FrameProducer(redis_client=obj.client(), max_age_ms=max_age_ms)
    totals = dict.fromkeys(("sent", "routed", "parked", "dropped"), 0)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn() if count else TextColumn(""),
        MofNCompleteColumn() if count else TextColumn("{task.completed} sent"),
        TextColumn("routed {task.fields[routed]}  parked {task.fields[parked]}  dropped {task.fields[dropped]}"),
        TimeElapsedColumn(),
        console=err_console,
    )
    started = time.monotonic()
    stamp = datetime.now(UTC) - timedelta(seconds=1)
    with until_interrupted(), progress:
        task = progress.add_task(f"{camera_id} ← {source_spec}", total=count or None, routed=0, parked=0, dropped=0)
        try:
            for index, frame in enumerate(itertools.islice(source, count or None)):
                pause = started + index / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # pacing to --rate
                # Capture time, strictly increasing even when the clock is coarse.
                stamp = max(datetime.now(UTC), stamp + timedelta(microseconds=1))
                decision = producer.publish(
                    camera_id=camera_id,
                    image=frame.image,
                    capabilities=list(capabilities),
                    width=frame.width,
                    height=frame.height,
                    format=frame.format,
                    metadata=frame.metadata,
                    timestamp=stamp,
                )
                totals["sent"] += 1
                totals["routed"] += len(decision.targets) > decision.dropped  # reached at least one queue
                totals["parked"] += bool(decision.parked)
                totals["dropped"] += decision.dropped
                progress.update(task, advance=1, **{name: totals[name] for name in ("routed", "parked", "dropped")})
        finally:
            producer.close()
    if not err_console.is_terminal:
        err_console.line()  # after the progress bar's last state
    console.print(
        f"sent {totals['sent']} frame(s) from {source_spec} as {camera_id}: {totals['routed']} routed, "
        f"{totals['parked']} parked, {totals['dropped']} dropped in {time.monotonic() - started:.1f}s"
    )
