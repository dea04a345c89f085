"""The ``frameflow`` command line."""

from __future__ import annotations

import signal
import sys
import threading

import click
from rich.console import Console
from rich.table import Table

from .embedded import EmbeddedRedis
from .errors import FrameflowError

console = Console()


@click.group()
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(context: click.Context, debug: bool) -> None:
    """frameflow: camera frames to AI processors, on Dramatiq and Redis Streams."""
    context.obj = {"debug": debug}


@main.command()
@click.option("--port", default=6379, show_default=True, help="TCP port on 127.0.0.1 (0: any free port).")
@click.option("--appendonly/--no-appendonly", default=True, show_default=True, help="AOF persistence.")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), help="Data directory (default: a temporary one).")
def redis(port: int, appendonly: bool, data_dir: str | None) -> None:
    """Run the embedded Redis in the foreground until SIGINT or SIGTERM."""
    server = EmbeddedRedis(port=port, appendonly=appendonly, data_dir=data_dir)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    server.start()
    console.print(f"embedded Redis ready at [bold]{server.url}[/] (data in {server.data_dir})")
    sys.stdout.flush()
    while not stopping.wait(0.5):
        if server.process is None or server.process.poll() is not None:
            raise click.ClickException(f"redis-server exited: {server.log_tail()}")
    server.stop()
    console.print("embedded Redis stopped")


@main.command()
@click.option("--interval", default=5.0, show_default=True, help="Seconds between housekeeping passes.")
def scheduler(interval: float) -> None:
    """Emit the pipeline's health heartbeat, reap dead processors, trim dead letters."""
    from middleware.routing import CapabilityRouter

    from .redis_streams import RedisStreamsBroker
    from .scheduler import PipelineScheduler

    broker = RedisStreamsBroker(middleware=[CapabilityRouter()])
    jobs = PipelineScheduler(broker, interval_s=interval)
    signal.signal(signal.SIGTERM, lambda *_: jobs.stop())
    signal.signal(signal.SIGINT, lambda *_: jobs.stop())
    console.print(f"frameflow scheduler on {broker.url}, every {interval:g}s")
    jobs.run()
    broker.close()


@main.command()
@click.option("--frames", default=200, show_default=True, help="How many frames to send.")
@click.option("--image-bytes", default=1024, show_default=True, help="Size of each fake image.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for all results.")
@click.pass_context
def demo(context: click.Context, frames: int, image_bytes: int, timeout: float) -> None:
    """Start a worker process, send frames through the broker, report the results."""
    from .demo import run_demo

    try:
        summary = run_demo(frames=frames, image_bytes=image_bytes, timeout=timeout)
    except FrameflowError as error:
        if context.obj["debug"]:
            raise
        raise click.ClickException(str(error)) from None
    table = Table(title="frameflow demo")
    table.add_column("frames sent", justify="right")
    table.add_column("routed", justify="right")
    table.add_column("results", justify="right")
    table.add_column("frames/s", justify="right")
    table.add_column("latency p50 (ms)", justify="right")
    table.add_column("latency p95 (ms)", justify="right")
    table.add_column("dead letters", justify="right")
    table.add_row(
        str(summary.frames_sent),
        str(summary.routed),
        str(summary.results),
        f"{summary.results / summary.seconds:.0f}" if summary.seconds else "-",
        f"{summary.latency_ms_p50:.1f}",
        f"{summary.latency_ms_p95:.1f}",
        str(summary.dead_letters),
    )
    console.print(table)
    if summary.results != summary.frames_sent:
        raise click.ClickException(f"only {summary.results} of {summary.frames_sent} frames produced a result")


if __name__ == "__main__":
    main()
