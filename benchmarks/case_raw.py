"""Raw redis-py on a stream: the physical limit of this machine and this Redis.

Pipelined ``XADD`` of ``messages`` entries with one ``payload`` field of ``size`` bytes
(``batch`` commands per round trip), then one consumer reading them back with
``XREADGROUP COUNT batch`` and acknowledging each batch with one ``XACK``.

With ``single``: one ``XADD`` per round trip on a bare redis-py connection (no client,
pool or retry around it): the floor under any broker's single-message ``send``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from benchmarks.timing import rate

STREAM = "bench:raw"
GROUP = "bench"


def run(url: str, params: dict[str, Any]) -> dict[str, float]:
    messages, size, batch = int(params["messages"]), int(params["size"]), int(params["batch"])
    client = redis.Redis.from_url(url)
    client.delete(STREAM)
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    payload = os.urandom(size)

    if params.get("single"):
        return {"send": _single_round_trips(client, messages, payload)}

    started = time.perf_counter()
    for offset in range(0, messages, batch):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(batch, messages - offset)):
            pipe.xadd(STREAM, {"payload": payload})
        pipe.execute()
    sent = time.perf_counter() - started

    received = 0
    started = time.perf_counter()
    while received < messages:
        response = client.xreadgroup(GROUP, "reader", {STREAM: ">"}, count=batch)
        entries = response[0][1]
        client.xack(STREAM, GROUP, *(entry_id for entry_id, _ in entries))
        received += len(entries)
    completed = time.perf_counter() - started
    client.delete(STREAM)
    client.close()
    return {"send": rate(messages, sent), "complete": rate(received, completed)}


def _single_round_trips(client: redis.Redis, messages: int, payload: bytes) -> float:
    connection = client.connection_pool.get_connection()
    try:
        packed = connection.pack_command("XADD", STREAM, "*", "payload", payload)
        started = time.perf_counter()
        for _ in range(messages):
            connection.send_packed_command(packed, check_health=False)
            connection.read_response()
        elapsed = time.perf_counter() - started
    finally:
        client.connection_pool.release(connection)
    client.delete(STREAM)
    client.close()
    return rate(messages, elapsed)
