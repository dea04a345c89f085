"""The pages' live feed: Server-Sent Events from the shared poller.

A page opens one ``EventSource`` on ``/api/events``; it gets the charts' history once (``history``),
then every read of the poller (``overview``). Each event is a whole state, not a change, so a page
that missed some (a slow tab, a reconnect) is right again at the next one. The browser reconnects
by itself when the stream breaks.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from .context import DashboardContext

#: Milliseconds the browser waits before reconnecting a broken stream.
RETRY_MS = 1000


async def events(request: Request) -> StreamingResponse:
    """GET /api/events: ``text/event-stream`` of the pipeline's state."""
    context: DashboardContext = request.app.state.context
    return StreamingResponse(
        _stream(context),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(context: DashboardContext) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n" + _event("history", list(context.poller.history))
    async for overview in context.poller.updates():
        yield _event("overview", overview)


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"
