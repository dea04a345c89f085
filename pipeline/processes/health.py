"""A process's HTTP endpoints: ``GET /health`` (JSON, 200 when healthy, 503 when not),
``GET /metrics`` (Prometheus text, or OpenMetrics when the scraper asks for it) and,
on the scheduler, ``GET /targets`` (Prometheus HTTP service discovery of the workers).

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

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

logger = logging.getLogger(__name__)


class HealthServer:
    """Serves ``report()`` at ``/health`` and ``registry`` at ``/metrics`` from a daemon thread.

    Parameters:
      report: returns ``(healthy, body)``; ``None`` serves no ``/health``.
      port: the TCP port (0: any free one; see :attr:`port` after :meth:`start`).
      host: the address to bind.
      registry: the metrics served at ``/metrics`` (default: prometheus-client's global
        registry, where the worker's metrics live); ``None`` serves no ``/metrics``.
      targets: returns the JSON list served at ``/targets``; ``None`` serves none.
    """

    def __init__(
        self,
        report: Callable[[], tuple[bool, dict[str, Any]]] | None,
        port: int,
        host: str = "127.0.0.1",
        *,
        registry: CollectorRegistry | None = REGISTRY,
        targets: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.report = report
        self.targets = targets
        self.host = host
        self.port = port
        self.registry = registry
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> HealthServer:
        report, registry, targets = self.report, self.registry, self.targets
        routes = (("/health", report), ("/metrics", registry), ("/targets", targets))
        served = [path for path, wanted in routes if wanted is not None]

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/health" and report is not None:
                    healthy, body = report()
                    self._answer(200 if healthy else 503, "application/json", json.dumps(body, default=str).encode())
                elif path == "/metrics" and registry is not None:
                    encoder, content_type = choose_encoder(self.headers.get("Accept"))
                    self._answer(200, content_type, encoder(registry))
                elif path == "/targets" and targets is not None:
                    self._answer(200, "application/json", json.dumps(targets()).encode())
                else:
                    self.send_error(404, f"only {' and '.join(served)} served here")

            def _answer(self, status: int, content_type: str, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("http: " + format, *args)

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="frameflow-http", daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
