"""The operator's buttons: drain, resume and deregister a processor; requeue and purge dead letters.

Every action is a POST that carries the token in the ``X-Frameflow-Token`` header. A browser sends
such a header across origins only after a CORS preflight, which the dashboard never grants, so
another site cannot make an operator's browser act (no cookie is involved either). Without a token
configured the dashboard is read-only: every action answers 403 and the page shows no buttons.
What each action does is :mod:`pipeline.tools.processor_actions` and the dead-letter API, as for
the CLI; the answer is the same sentence the CLI prints.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import redis
from starlette.requests import Request
from starlette.responses import JSONResponse

from pipeline.errors import FrameflowError, InvalidQueueName, UnknownDeadLetter
from pipeline.tools.overview import resolve_queue
from pipeline.tools.processor_actions import deregister_processor, set_draining

from .context import DashboardContext

logger = logging.getLogger(__name__)

#: The request header that carries the token.
TOKEN_HEADER = "X-Frameflow-Token"


def refusal(request: Request) -> JSONResponse | None:
    """A 403 answer when ``request`` may not act (no token configured, or another token), else None."""
    context: DashboardContext = request.app.state.context
    if context.settings.read_only:
        return JSONResponse(
            {"error": "read-only dashboard: start it with FRAMEFLOW_DASHBOARD_TOKEN set to allow actions"},
            status_code=403,
        )
    given = request.headers.get(TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), context.settings.token.encode()):
        return JSONResponse({"error": f"wrong or missing token ({TOKEN_HEADER} header)"}, status_code=403)
    return None


async def processor_action(request: Request) -> JSONResponse:
    """POST /api/processors/{processor_id}/{drain|resume|deregister}."""
    if (refused := refusal(request)) is not None:
        return refused
    context: DashboardContext = request.app.state.context
    processor_id, action = request.path_params["processor_id"], request.path_params["action"]
    if action == "deregister":
        return await _answer(
            context, "deregister", deregister_processor, context.client, context.namespace, processor_id, context.broker
        )
    if action in ("drain", "resume"):
        return await _answer(context, action, _drain, context, processor_id, action == "drain")
    return JSONResponse({"error": f"no action {action!r}: drain, resume or deregister"}, status_code=404)


async def dead_letter_action(request: Request) -> JSONResponse:
    """POST /api/dead-letters/{queue}/{requeue|purge}; requeue takes ``{"entry_ids": [...]}`` (none: all)."""
    if (refused := refusal(request)) is not None:
        return refused
    context: DashboardContext = request.app.state.context
    queue, action = request.path_params["queue"], request.path_params["action"]
    if action not in ("requeue", "purge"):
        return JSONResponse({"error": f"no action {action!r}: requeue or purge"}, status_code=404)
    entry_ids: list[str] = []
    if action == "requeue":
        body = await _json_body(request)
        entry_ids = [str(entry_id) for entry_id in body.get("entry_ids") or []]
    return await _answer(context, action, _dead_letters, context, queue, action, entry_ids)


def _drain(context: DashboardContext, processor_id: str, draining: bool) -> str:
    return set_draining(context.client, context.namespace, processor_id, draining=draining)


def _dead_letters(context: DashboardContext, queue: str, action: str, entry_ids: list[str]) -> str:
    queue_name = resolve_queue(context.client, context.namespace, queue)
    letters = context.plain_broker.dead_letter_queue(queue_name)
    if action == "purge":
        return f"purged {letters.purge()} dead letter(s) of {queue_name}"
    missing = [entry_id for entry_id in entry_ids if letters.get(entry_id) is None]
    if missing:
        raise UnknownDeadLetter(f"no dead letter {', '.join(missing)} in {queue_name}")
    return f"requeued {letters.requeue(entry_ids or None)} dead letter(s) to {queue_name}"


async def _answer(context: DashboardContext, action: str, function: Any, *args: Any) -> JSONResponse:
    """Run ``function(*args)`` off the event loop: its sentence as ``message``, or the error in one line."""
    try:
        message = await context.in_thread(function, *args)
    except (LookupError, InvalidQueueName) as error:
        return JSONResponse({"error": str(error)}, status_code=404)
    except FrameflowError as error:
        return JSONResponse({"error": str(error)}, status_code=409)
    except redis.RedisError as error:
        return JSONResponse({"error": f"cannot reach Redis: {error}"}, status_code=503)
    logger.info("Dashboard action %s: %s", action, message)
    return JSONResponse({"message": message})


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
