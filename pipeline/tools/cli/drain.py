"""Taking a processor out of rotation: ``frameflow drain`` (stop routing to it) and ``deregister``.

What they do is :mod:`pipeline.tools.processor_actions`, which the dashboard's buttons share.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from pipeline.domain.registry import ProcessorRegistry
from pipeline.errors import FrameflowError
from pipeline.streams.keys import queue_keys
from pipeline.tools.processor_actions import deregister_processor, known_processor, set_draining

from .output import console

if TYPE_CHECKING:
    from .context import CliContext


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
    console.print(deregister_processor(obj.client(), obj.namespace, processor_id, obj.broker))


@click.command()
@click.argument("processor_id")
@click.option("--resume", is_flag=True, help="Route frames to it again.")
@click.option("--wait", is_flag=True, help="Wait until its queue is empty.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds --wait waits at most.")
@click.pass_obj
def drain(obj: CliContext, processor_id: str, resume: bool, wait: bool, timeout: float) -> None:
    """Stop routing frames to PROCESSOR_ID; it keeps processing what is already queued for it."""
    client = obj.client()
    console.print(set_draining(client, obj.namespace, processor_id, draining=not resume))
    if resume or not wait:
        return
    info = known_processor(ProcessorRegistry(client, obj.namespace), processor_id, live_only=True)
    assert info is not None
    stream = queue_keys(obj.namespace, info.queue_name).stream
    deadline = time.monotonic() + timeout
    while (left := client.xlen(stream)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        raise FrameflowError(f"{processor_id} still has {left} frame(s) queued after {timeout:g}s")
    console.print(f"drained {processor_id}: its queue is empty")
