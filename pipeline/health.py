"""The processor's health endpoint: ``GET /health`` answers JSON, 200 when healthy, 503 when not.

Bound to 127.0.0.1 unless ``FRAMEFLOW_HEALTH_HOST`` says otherwise: health
and metrics are not for the whole network by default.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)


class HealthServer:
    """Serves ``report()`` at ``/health`` from a daemon thread.

    Parameters:
      report: returns ``(healthy, body)``.
      port: the TCP port (0: any free one; see :attr:`port` after :meth:`start`).
      host: the address to bind.
    """

    def __init__(self, report: Callable[[], tuple[bool, dict[str, Any]]], port: int, host: str = "127.0.0.1") -> None:
        self.report = report
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> HealthServer:
        report = self.report

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/health":
                    self.send_error(404, "only /health is served here")
                    return
                healthy, body = report()
                payload = json.dumps(body, default=str).encode()
                self.send_response(200 if healthy else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("health: " + format, *args)

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="frameflow-health", daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
