"""Taking a processor out of rotation: ``frameflow drain`` (stop routing to it) and ``deregister``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from pipeline.domain.registry import ProcessorInfo, ProcessorRegistry
from pipeline.errors import FrameflowError, UnknownProcessor
from pipeline.streams.keys import queue_keys

from .output import age, console

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
    from pipeline.processes.scheduler import PipelineScheduler

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
