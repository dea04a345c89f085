"""``frameflow dashboard``: the click command that serves the dashboard with uvicorn.

Importing this module imports neither Starlette nor uvicorn, so ``frameflow`` works without the
``dashboard`` extra; running the command without it says what to install, in one line.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import click

from .settings import DEFAULT_HOST, DEFAULT_PORT, DashboardSettings

if TYPE_CHECKING:
    from pipeline.tools.cli.context import CliContext


@click.command("dashboard")
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535), help="Port.")
@click.pass_obj
def dashboard(obj: CliContext, host: str, port: int) -> None:
    """Serve the live dashboard: processors, queues, cameras, frames, dead letters, and actions.

    Actions (drain, resume, deregister, requeue, purge) need FRAMEFLOW_DASHBOARD_TOKEN; without it the
    dashboard is read-only. Runs until SIGINT or SIGTERM.
    """
    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise click.ClickException(
            f"frameflow dashboard needs {' and '.join(missing)}: pip install 'frameflow[dashboard]'"
        )
    try:
        settings = DashboardSettings.from_env()
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    from .app import create_app
    from .server import DashboardServer

    app = create_app(obj.client(), obj.namespace, settings, obj.masked_url)
    mode = "read-only (set FRAMEFLOW_DASHBOARD_TOKEN to allow actions)" if settings.read_only else "actions allowed"
    click.echo(f"frameflow dashboard on http://{host}:{port}/ for {obj.masked_url}: {mode}")
    DashboardServer(app, host, port).run()
    click.echo("frameflow dashboard stopped")
