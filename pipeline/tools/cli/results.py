"""``frameflow results``: print result streams, the recent entries and then, with ``--follow``, new ones.

Reading does not consume (plain ``XREAD``, no consumer group), and nothing read is trusted: an
entry that is not a result is skipped with one line, and control characters are shown escaped.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from pipeline.domain.results import RESULT_FIELDS, result_problem

from .output import console, err_console, plain, printable, until_interrupted

if TYPE_CHECKING:
    import redis

    from .context import CliContext


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
