"""``frameflow cameras``: the cameras' state (no arguments), ``cameras run FILE`` and ``cameras check FILE``.

``run`` reads every camera of the cameras file in this process and publishes their frames until
SIGINT or SIGTERM; ``check`` validates the file and probes each camera once. The camera edge
(:mod:`pipeline.cameras`) does the work; this module only parses options and prints.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
from typing import TYPE_CHECKING

import click
from rich.table import Table

from pipeline.cameras.config import load_cameras
from pipeline.cameras.state import CameraStateStore
from pipeline.settings import Settings

from .inspect import cameras_table
from .output import console, plain, print_json

if TYPE_CHECKING:
    from pipeline.cameras.probe import ProbeResult

    from .context import CliContext


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def cameras(context: click.Context, as_json: bool) -> None:
    """Cameras: with no command, every camera's state as its `cameras run` process reports it."""
    if context.invoked_subcommand is not None:
        return
    obj: CliContext = context.obj
    states = CameraStateStore(obj.client(), obj.namespace).read()
    if as_json:
        print_json(states)
    elif not states:
        console.print("no camera has reported yet (start one: frameflow cameras run cameras.yml)")
    else:
        console.print(cameras_table(states))


@cameras.command("run")
@click.argument("path", metavar="FILE")
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0),
    default=None,
    help="Serve the cameras' Prometheus metrics at /metrics on this port (0: any free port).",
)
@click.option(
    "--state-interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between writes of the cameras' state to Redis (its TTL is three of them).",
)
@click.option(
    "--fps",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0, max=1000),
    help="Every camera's fps cap, in place of the file's (0: the file's).",
)
@click.pass_obj
def run(obj: CliContext, path: str, metrics_port: int | None, state_interval: float, fps: float) -> None:
    """Read every enabled camera of FILE and publish their frames, until SIGINT or SIGTERM."""
    from pipeline.cameras.metrics import camera_registry
    from pipeline.cameras.runner import CameraRunner
    from pipeline.processes.health import HealthServer
    from pipeline.processes.producer import FrameProducer

    enabled = [dataclasses.replace(camera, fps=fps or camera.fps) for camera in load_cameras(path) if camera.enabled]
    if not enabled:
        raise click.ClickException(f"cameras file {path}: no enabled camera")
    if not obj.debug:
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("middleware.decisions").setLevel(logging.WARNING)  # a line per parked frame otherwise
    producer = FrameProducer(redis_client=obj.client())
    runner = CameraRunner(
        enabled, producer, state=CameraStateStore(obj.client(), obj.namespace), state_interval_s=state_interval
    )
    server = None
    if metrics_port is not None:
        try:
            server = HealthServer(
                None, metrics_port, Settings.from_env().health_host, registry=camera_registry(runner.statuses)
            ).start()
        except OSError as error:
            raise click.ClickException(
                f"cannot serve metrics on port {metrics_port}: {error.strerror or error}"
            ) from None
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    console.print(
        f"cameras: {len(enabled)} camera(s) from {path} on {obj.masked_url}"
        + (f", metrics at http://{server.host}:{server.port}/metrics" if server is not None else "")
    )
    sys.stdout.flush()
    try:
        runner.run()
    finally:
        if server is not None:
            server.stop()
        producer.close()
    console.print("cameras stopped")


@cameras.command("check")
@click.argument("path", metavar="FILE")
@click.option(
    "--seconds",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="How long to read each camera to measure its frame rate.",
)
def check(path: str, seconds: float) -> None:
    """Validate FILE and probe each enabled camera once: reachable, codec, resolution, measured fps.

    Exits 1 when the file is wrong or a camera cannot be read.
    """
    from pipeline.cameras.probe import probe_all

    enabled = [camera for camera in load_cameras(path) if camera.enabled]
    results = probe_all(enabled, seconds)
    console.print(check_table(path, results))
    unreachable = [result.camera_id for result in results if not result.reachable]
    if unreachable:
        raise click.ClickException(f"{len(unreachable)} camera(s) cannot be read: {', '.join(unreachable)}")


def check_table(path: str, results: list[ProbeResult]) -> Table:
    table = Table(title=f"cameras in {path}")
    for column in ("camera", "reachable", "codec", "resolution", "measured fps", "url / error"):
        table.add_column(column, justify="right" if column == "measured fps" else "left")
    for result in results:
        table.add_row(
            plain(result.camera_id),
            "[green]yes[/]" if result.reachable else "[red]no[/]",
            result.codec or "-",
            f"{result.width}x{result.height}" if result.reachable else "-",
            f"{result.fps:.1f}" if result.fps is not None else "-",
            plain(result.error or result.url),
        )
    return table
