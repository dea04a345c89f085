"""The dashboard's ASGI application: its routes, its static page, its one poller.

The page is static (``static/``: HTML, CSS and a script, no framework, nothing from a CDN); what it
shows comes from the JSON and event endpoints below. Every response forbids framing and inline
scripts from elsewhere, so the page cannot be embedded to trick a click on an action.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import redis
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.mqtt.mapping import ResultMapping

from .actions import dead_letter_action, processor_action
from .context import DashboardContext
from .events import events
from .pictures import PictureCache
from .poller import SharedPoller
from .reads import config, dead_letters, frame, picture, preview
from .settings import DashboardSettings
from .views import read_overview

#: The page, its script and its style.
STATIC = Path(__file__).parent / "static"

#: Headers every answer carries (see the module docstring).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(client: redis.Redis, namespace: str, settings: DashboardSettings, redis_url_masked: str) -> Starlette:
    """The dashboard on ``client``; ``redis_url_masked`` is what the page shows of Redis."""
    mapping = ResultMapping.default()
    poller = SharedPoller(
        lambda: read_overview(client, namespace, mapping),
        interval_s=settings.interval_s,
        history_points=max(1, round(settings.history_s / settings.interval_s)),
    )
    pictures = PictureCache(client, namespace, mapping)
    context = DashboardContext(client, namespace, settings, poller, redis_url_masked, pictures)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await poller.stop()

    app = Starlette(
        routes=[
            Route("/", _page),
            Route("/api/config", config),
            Route("/api/events", events),
            Route("/api/frames/{frame_id}", frame),
            Route("/api/dead-letters", dead_letters),
            Route("/api/pictures/{stream}/{entry_id}", picture),
            Route("/api/previews/{camera_id}", preview),
            Route("/api/dead-letters/{queue}/{action}", dead_letter_action, methods=["POST"]),
            Route("/api/processors/{processor_id}/{action}", processor_action, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
    )
    app.state.context = context
    return app


async def _page(request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every answer (streams included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_secured)
