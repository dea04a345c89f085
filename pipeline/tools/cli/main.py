"""The ``frameflow`` command line: the group, its error handling, and the commands that run processes.

Each other command has a module of its own in this folder: the read-only views
``processors`` and ``queues`` in :mod:`~pipeline.tools.cli.inspect`, ``top`` in
:mod:`~pipeline.tools.cli.top` and ``results`` in :mod:`~pipeline.tools.cli.results`,
dead letters in :mod:`~pipeline.tools.cli.dlq`, taking a processor out of rotation
(``drain``, ``deregister``) in :mod:`~pipeline.tools.cli.drain`, sending frames in
:mod:`~pipeline.tools.cli.enqueue`, models in :mod:`~pipeline.tools.cli.models`.
The shared context is :mod:`~pipeline.tools.cli.context`, the consoles :mod:`~pipeline.tools.cli.output`.

Errors a person can act on (Redis unreachable, an unknown processor or queue, a
bad source) are :class:`~pipeline.errors.FrameflowError`\\ s or Redis errors; the
group turns them into one line and exit code 1, with the traceback only under
``--debug``. Commands never catch them themselves.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import os
import signal
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import click
import redis
from rich.table import Table

from pipeline.dashboard.command import dashboard
from pipeline.errors import FrameflowError, ProcessorLoadError
from pipeline.mqtt.command import mqtt
from pipeline.processes.processor import ProcessorClient
from pipeline.settings import Settings, mask_url
from pipeline.streams.embedded import EmbeddedRedis
from pipeline.streams.shared_redis import LOCAL_REDIS_URL, running_shared_redis, shared_redis_users, stop_shared_redis

from .cameras import cameras
from .context import DEFAULT_REDIS_DESCRIPTION, CliContext
from .dlq import dlq
from .drain import deregister, drain
from .enqueue import enqueue
from .ingest import ingest
from .inspect import processors, queues
from .models import models
from .output import console
from .results import results
from .top import top


class FrameflowGroup(click.Group):
    """Turns the errors a person can act on into one line and exit code 1 (tracebacks with ``--debug``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (FrameflowError, redis.RedisError) as error:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(_one_line(error, ctx)) from None


def _one_line(error: BaseException, ctx: click.Context) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    url = ctx.obj.known_url if isinstance(ctx.obj, CliContext) else LOCAL_REDIS_URL
    if isinstance(error, redis.RedisError):
        text = f"Redis at {mask_url(url)}: {text}"
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


@click.group(cls=FrameflowGroup)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors, and debug logs.")
@click.option(
    "--redis-url",
    metavar="URL",
    help=f"The Redis to use [default: REDIS_URL, else {DEFAULT_REDIS_DESCRIPTION}].",
)
@click.option(
    "--wait-for-redis",
    "wait_for_redis_s",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="SECONDS",
    help=(
        "Wait this long for Redis to answer before giving up (for processes started together). "
        "Without it `worker` waits FRAMEFLOW_WAIT_FOR_REDIS seconds, as long as it takes when that is 0."
    ),
)
@click.pass_context
def main(context: click.Context, debug: bool, redis_url: str | None, wait_for_redis_s: float) -> None:
    """frameflow: camera frames to AI processors, on Dramatiq and Redis Streams."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    context.obj = CliContext(debug=debug, redis_url=redis_url, wait_for_redis_s=wait_for_redis_s)
    context.call_on_close(context.obj.close)


for command in (processors, queues, top, results, dlq, deregister, drain, enqueue, ingest, cameras):
    main.add_command(command)


def _log_info(obj: CliContext) -> None:
    """Long-running processes say what they do (INFO), unless ``--debug`` asked for more."""
    if not obj.debug:
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per job run otherwise


# -- processes -----------------------------------------------------------------------------
@main.group(name="redis", invoke_without_command=True)
@click.option("--port", default=6379, show_default=True, help="TCP port on 127.0.0.1 (0: any free port).")
@click.option("--appendonly/--no-appendonly", default=True, show_default=True, help="AOF persistence.")
@click.option("--dir", "data_dir", type=click.Path(file_okay=False), help="Data directory (default: a temporary one).")
@click.option(
    "--linger",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="On SIGINT/SIGTERM, seconds to wait for clients to disconnect before stopping.",
)
@click.pass_context
def redis_command(context: click.Context, port: int, appendonly: bool, data_dir: str | None, linger: float) -> None:
    """Run the embedded Redis in the foreground until SIGINT or SIGTERM.

    The server runs in a session of its own: when a process manager (honcho) or a
    terminal signals the whole group, the server keeps serving the other processes
    while they shut down, for up to --linger seconds, then stops.

    `frameflow redis status` and `frameflow redis stop` show and stop the shared
    embedded Redis that processes without REDIS_URL start and find.
    """
    if context.invoked_subcommand is not None:
        return
    server = EmbeddedRedis(port=port, appendonly=appendonly, data_dir=data_dir, new_session=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    server.start()
    console.print(f"embedded Redis ready at [bold]{server.url}[/] (data in {server.data_dir})")
    sys.stdout.flush()
    while not stopping.wait(0.5):
        if server.process is None or server.process.poll() is not None:
            raise click.ClickException(f"redis-server exited: {server.log_tail()}")
    _wait_for_clients_to_leave(server.url, linger)
    server.stop()
    console.print("embedded Redis stopped")


@redis_command.command(name="status")
def redis_status() -> None:
    """Show the shared embedded Redis (its URL, who started it, its users)."""
    record = running_shared_redis()
    if record is None:
        _say_no_shared_redis()
        return
    users = ", ".join(str(user.pid) for user in shared_redis_users()) or "none (stopping after the grace period)"
    console.print(
        f"shared embedded Redis at {mask_url(record.url)} (started by pid {record.started_by}, "
        f"watchdog pid {record.watchdog.pid}); users: {users}"
    )


@redis_command.command(name="stop")
def redis_stop() -> None:
    """Stop the shared embedded Redis now; the processes using it lose it."""
    record = stop_shared_redis()
    if record is None:
        _say_no_shared_redis()
        return
    console.print(f"stopped the shared embedded Redis at {mask_url(record.url)} (started by pid {record.started_by})")


def _say_no_shared_redis() -> None:
    console.print(f"no shared embedded Redis runs (runtime folder {Settings.from_env().runtime_dir})")


def _wait_for_clients_to_leave(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        while time.monotonic() < deadline and len(client.client_list()) > 1:  # ourselves included
            time.sleep(0.05)
    except redis.RedisError:
        pass
    finally:
        client.close()


@main.command()
@click.option("--interval", default=5.0, show_default=True, help="Seconds between housekeeping passes.")
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0),
    default=None,
    help="Serve the pipeline-wide Prometheus metrics at /metrics on this port (0: any free port).",
)
@click.pass_obj
def scheduler(obj: CliContext, interval: float, metrics_port: int | None) -> None:
    """Emit the pipeline's health heartbeat, reap dead processors, trim dead letters, forget dead workers' consumers."""
    from middleware.routing import CapabilityRouter
    from pipeline.processes.scheduler import PipelineScheduler

    _log_info(obj)
    broker = obj.broker(CapabilityRouter())
    jobs = PipelineScheduler(broker, interval_s=interval)
    signal.signal(signal.SIGTERM, lambda *_: jobs.stop())
    signal.signal(signal.SIGINT, lambda *_: jobs.stop())
    console.print(f"frameflow scheduler on {obj.masked_url}, every {interval:g}s")
    if metrics_port is not None:
        try:
            port = jobs.serve_metrics(metrics_port)
        except OSError as error:  # the port is taken, or not ours to bind
            reason = error.strerror or error
            raise click.ClickException(f"cannot serve metrics on port {metrics_port}: {reason}") from None
        console.print(f"metrics at http://{Settings.from_env().health_host}:{port}/metrics")
    sys.stdout.flush()
    jobs.run()
    broker.close()


@main.command()
@click.argument("target", metavar="MODULE[:CLASS]")
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve /health and /metrics on this port (0: any free port, announced in the registry) "
    "[default: HEALTH_PORT, else the processor's own health_port].",
)
@click.pass_obj
def worker(obj: CliContext, target: str, health_port: int | None) -> None:
    """Run one processor the seed's way, in this process, until SIGINT or SIGTERM.

    MODULE alone runs the processor instance the module builds (workers.sample's
    `processor`); MODULE:NAME names an instance, a ProcessorClient subclass that
    takes no arguments, or a function that returns a processor. For several
    worker processes of one processor, use Dramatiq's CLI instead:
    `dramatiq pipeline.broker MODULE -p N`.

    A Redis that does not answer yet is waited for (see --wait-for-redis), a
    WARNING line per try; SIGINT or SIGTERM during that wait stop it at once.
    """
    _log_info(obj)
    os.environ["REDIS_URL"] = obj.url  # which the processor reads when it is built
    put_current_folder_on_path()
    processor = load_processor(target)
    if obj.wait_for_redis_s:
        processor.wait_for_redis_s = obj.wait_for_redis_s
    if health_port is not None:
        processor.health_port = health_port
    elif processor.health_port is None:  # a processor built without options_from_env
        processor.health_port = Settings.from_env().health_port
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    signal.signal(signal.SIGINT, lambda *_: processor.stop())
    console.print(
        f"processor [bold]{processor.processor_id}[/] ({', '.join(processor.capabilities)}) "
        f"on {obj.masked_url}, queue {processor.queue_name}"
    )
    asyncio.run(processor.start())
    console.print(f"processor {processor.processor_id} stopped")


def put_current_folder_on_path() -> None:
    """Let ``frameflow worker mysvc`` import ``mysvc.py`` from the current folder, as ``dramatiq mysvc``
    does: run as a console script, Python puts the script's folder on the path, not the current one."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)


def load_processor(target: str) -> ProcessorClient:
    """The processor ``MODULE[:NAME]`` names (see ``frameflow worker --help``)."""
    module_name, _, name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ProcessorLoadError(f"cannot import {module_name!r}: {error}") from None
    if name:
        if not hasattr(module, name):
            raise ProcessorLoadError(f"module {module_name!r} has no {name!r}")
        return _build_processor(getattr(module, name), target)
    instances = [value for value in vars(module).values() if isinstance(value, ProcessorClient)]
    classes = [
        value
        for value in vars(module).values()
        if inspect.isclass(value) and issubclass(value, ProcessorClient) and value.__module__ == module.__name__
    ]
    found = instances or classes
    if len(found) != 1:
        what = "no processor" if not found else f"{len(found)} processors"
        raise ProcessorLoadError(f"module {module_name!r} defines {what}; name one: {module_name}:NAME")
    return _build_processor(found[0], target)


def _build_processor(value: Any, target: str) -> ProcessorClient:
    if isinstance(value, ProcessorClient):
        return value
    if callable(value):
        try:
            built = value()
        except TypeError as error:
            raise ProcessorLoadError(
                f"{target} cannot be built without arguments ({error}); name an instance or a factory function"
            ) from None
        if isinstance(built, ProcessorClient):
            return built
    raise ProcessorLoadError(f"{target} is not a ProcessorClient, a ProcessorClient subclass or a factory of one")


@main.command()
@click.option("--frames", default=200, show_default=True, help="How many frames to send.")
@click.option("--image-bytes", default=1024, show_default=True, help="Size of each fake image.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for all results.")
@click.pass_obj
def demo(obj: CliContext, frames: int, image_bytes: int, timeout: float) -> None:
    """Start a worker process, send frames through the broker, report the results.

    Without --redis-url or REDIS_URL it runs on an embedded Redis of its own.
    """
    from pipeline.tools.demo import run_demo

    if obj.configured_url:
        os.environ["REDIS_URL"] = obj.configured_url
    summary = run_demo(frames=frames, image_bytes=image_bytes, timeout=timeout)
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


@main.command()
@click.option("--duration", default=60.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds to produce.")
@click.option("--overload", default=10.0, show_default=True, type=click.FloatRange(min=0.1), help="x capacity.")
@click.option("--processors", default=2, show_default=True, type=click.IntRange(min=1), help="Processor processes.")
@click.option("--capacity", default=2, show_default=True, type=click.IntRange(min=1), help="Threads per processor.")
@click.option("--processing-ms", default=20.0, show_default=True, type=click.FloatRange(min=1), help="Work per frame.")
@click.option("--cameras", default=4, show_default=True, type=click.IntRange(min=1), help="Cameras sending frames.")
@click.option("--image-bytes", default=1024, show_default=True, type=click.IntRange(min=1), help="Size of each image.")
@click.option("--max-memory", default="64mb", show_default=True, help="maxmemory of the embedded Redis.")
@click.pass_obj
def soak(obj: CliContext, max_memory: str, **plan: Any) -> None:
    """Overload real processors, then account for every frame: processed or dropped with its reason.

    Without --redis-url or REDIS_URL it runs on an embedded Redis bounded by --max-memory;
    on a configured Redis, the server's own maxmemory is the bound. Exits 1 when a frame is
    unaccounted for, a queue was not drained, Redis refused a write or memory passed the bound.
    """
    from pipeline.tools.soak import SoakPlan, parse_memory, run_soak
    from pipeline.tools.soak_report import summary_table

    if obj.configured_url:
        os.environ["REDIS_URL"] = obj.configured_url
    parse_memory(max_memory)  # a bad size fails before anything starts
    summary = run_soak(SoakPlan(**{"duration_s": plan.pop("duration"), **plan}, max_memory=max_memory))
    console.print(summary_table(summary))
    if summary.problems():
        raise click.ClickException("; ".join(summary.problems()))


main.add_command(models)
main.add_command(mqtt)  # the MQTT bridge (pipeline/mqtt/; paho-mqtt is the `mqtt` extra)
main.add_command(dashboard)  # the web dashboard (pipeline/dashboard/; starlette and uvicorn: the `dashboard` extra)


if __name__ == "__main__":
    main()
