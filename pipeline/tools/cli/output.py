"""How the CLI prints: its consoles, and the helpers every view formats with.

Each command module (the read-only views, ``dlq``, ``drain``, ``enqueue``) prints through the same
two consoles, so tests can widen them in one place (``tests/cli_harness.py``), and shows ages and
untrusted text (whatever was written to a stream) the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from pipeline.tools.overview import age as age  # ages print as everywhere else

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
