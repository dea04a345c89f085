"""The pages' lookups that are not live: the dashboard's configuration, a frame, the dead letters,
a camera's picture, a camera's preview."""

from __future__ import annotations

import redis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.domain.previews import read_preview
from pipeline.version import __version__

from .context import DashboardContext
from .dead_letters import list_dead_letters
from .lookup import find_frame


async def config(request: Request) -> JSONResponse:
    """GET /api/config: whether actions are allowed and where Redis is (password masked); never the token."""
    context: DashboardContext = request.app.state.context
    return JSONResponse(
        {
            "read_only": context.settings.read_only,
            "redis": context.redis_url_masked,
            "namespace": context.namespace,
            "version": __version__,
            "interval_s": context.settings.interval_s,
        }
    )


async def frame(request: Request) -> JSONResponse:
    """GET /api/frames/{frame_id}: its results, queue entries and dead letters."""
    context: DashboardContext = request.app.state.context
    frame_id = request.path_params["frame_id"]
    try:
        found = await context.in_thread(
            find_frame, context.client, context.namespace, frame_id, context.settings.trace_url
        )
    except redis.RedisError as error:
        return JSONResponse({"error": f"cannot read Redis: {error}"}, status_code=503)
    return JSONResponse(found)


async def dead_letters(request: Request) -> JSONResponse:
    """GET /api/dead-letters: every queue's dead letters, oldest first."""
    context: DashboardContext = request.app.state.context
    try:
        listing = await context.in_thread(list_dead_letters, context.client, context.namespace, context.plain_broker)
    except redis.RedisError as error:
        return JSONResponse({"error": f"cannot read Redis: {error}"}, status_code=503)
    return JSONResponse({"queues": listing})


async def picture(request: Request) -> Response:
    """GET /api/pictures/{stream}/{entry_id}: the kept image of that result with its boxes, as a JPEG."""
    context: DashboardContext = request.app.state.context
    stream, entry_id = request.path_params["stream"], request.path_params["entry_id"]
    try:
        jpeg = await context.in_thread(context.pictures.picture, stream, entry_id)
    except redis.RedisError as error:
        return JSONResponse({"error": f"cannot read Redis: {error}"}, status_code=503)
    if jpeg is None:
        return JSONResponse({"error": "no picture kept for that result (never kept, or expired)"}, status_code=404)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


async def preview(request: Request) -> Response:
    """GET /api/previews/{camera_id}: the camera's newest kept frame, its image as published. The page
    asks with ``?v=<frame_id>``; another frame is another URL, so an answer may be cached."""
    context: DashboardContext = request.app.state.context
    try:
        found = await context.in_thread(
            read_preview, context.client, context.namespace, request.path_params["camera_id"]
        )
    except redis.RedisError as error:
        return JSONResponse({"error": f"cannot read Redis: {error}"}, status_code=503)
    if found is None:
        return JSONResponse({"error": "no preview of that camera (none published lately)"}, status_code=404)
    return Response(found.image, media_type=found.media_type, headers={"Cache-Control": "private, max-age=60"})
