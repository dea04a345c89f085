"""``frameflow dlq``: list, show, requeue and purge a queue's dead letters."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from pipeline.errors import UnknownDeadLetter
from pipeline.streams.dead_letters import DeadLetter, DeadLetterQueue
from pipeline.tools.overview import resolve_queue

from .output import age, console, plain, print_json

if TYPE_CHECKING:
    from .context import CliContext

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
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"  # a frame's raw image
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return plain(text) if len(text) <= SHOWN_VALUE_CHARS else f"<{len(text)} characters>"
