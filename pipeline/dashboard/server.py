"""Serving the dashboard with uvicorn, and stopping it cleanly while pages are open.

Open pages hold their event streams for as long as they are open, and uvicorn waits for open
connections before it stops. So SIGTERM or SIGINT first ends every stream (the poller closes), then
lets uvicorn stop as usual: the process exits 0 within a moment, like frameflow's other services,
instead of being killed by its supervisor's grace period.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from .context import DashboardContext

#: Seconds uvicorn gives requests still running after the streams ended.
GRACE_S = 2


class DashboardServer(uvicorn.Server):
    """uvicorn's server with the dashboard's shutdown (see the module docstring)."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=GRACE_S
        )
        super().__init__(config)
        self.context: DashboardContext = app.state.context

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Our handlers for the run; unlike uvicorn's, the signal is not raised again afterwards."""
        previous = {signum: signal.signal(signum, self.handle_exit) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.context.poller.close_soon()
        super().handle_exit(sig, frame)
