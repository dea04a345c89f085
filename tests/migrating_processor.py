"""A processor written against the original client's API, as a real process the tests drive.

``python -m tests.migrating_processor ID CAPABILITY...`` runs ``async with processor:`` (the
original's way to run one) and, while it runs, takes calls of the original's methods from the
Redis list ``migration:calls:<ID>`` (JSON ``{"call": name, "argument": value}``), answering each on
``migration:answers:<ID>`` as ``{"value": ...}`` or ``{"error": "<type>: <text>"}``. The tests thus
call ``update_configuration``, ``unregister``, ``register`` and ``publish_result`` inside a
processor process and observe the effects from outside, as a router or a result reader does.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import redis

from pipeline import ProcessorClient

RESULT_STREAM = "migration:results"


def calls_key(processor_id: str) -> str:
    return f"migration:calls:{processor_id}"


def answers_key(processor_id: str) -> str:
    return f"migration:answers:{processor_id}"


class MigratingProcessor(ProcessorClient):
    async def process_frame(self, frame_data: dict[bytes, bytes]) -> dict:
        return {"seen": frame_data[b"frame_id"].decode()}


async def serve_calls(processor: MigratingProcessor, client: redis.Redis, stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stopping.is_set():
        popped = await loop.run_in_executor(None, lambda: client.blpop([calls_key(processor.id)], timeout=1))
        if popped is None:
            continue
        request = json.loads(popped[1])
        method = getattr(processor, request["call"])
        answer: dict[str, Any]
        try:
            value = method(request["argument"]) if "argument" in request else method()
            answer = {"value": await value if asyncio.iscoroutine(value) else value}
        except Exception as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        client.rpush(answers_key(processor.id), json.dumps(answer))


async def main(processor_id: str, capabilities: list[str]) -> None:
    processor = MigratingProcessor(
        processor_id=processor_id,
        capabilities=capabilities,
        orchestrator_url="http://frame-buffer-v2:8002",
        capacity=2,
        result_stream=RESULT_STREAM,
        health_check_interval=0.5,
    )
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    async with processor:
        await serve_calls(processor, client, stopping)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
