"""The frame page: where one frame is, found by its id.

A frame leaves traces in three places: the queue entry while it waits or runs (the seed's
``frame_id`` field), its results (every result names its frame and processor), and the dead
letters when it failed for good. frameflow keeps no index by frame id, so each place is searched
from its newest entries, a bounded number per stream: the page finds recent frames, and says so.
"""

from __future__ import annotations

from typing import Any

import redis

from pipeline.domain.registry import ProcessorRegistry
from pipeline.domain.telemetry import trace_id_of
from pipeline.streams.keys import queue_keys
from pipeline.tools.overview import snapshot_queues

#: Entries searched per stream, newest first.
SEARCHED_ENTRIES = 2000


def find_frame(client: redis.Redis, namespace: str, frame_id: str, trace_url: str = "") -> dict[str, Any]:
    """What Redis still holds of ``frame_id``: its results, its queue entries, its dead letters."""
    processors = ProcessorRegistry(client, namespace).list(include_dead=True)
    result_streams = sorted({info.result_stream for info in processors if info.alive and info.result_stream})
    queues, _ = snapshot_queues(client, namespace, processors)
    places: list[tuple[str, str, str]] = [("result", stream, stream) for stream in result_streams]
    for queue in queues:
        keys = queue_keys(namespace, queue.queue_name)
        places.append(("queued", queue.queue_name, keys.stream))
        if queue.dead_letters:
            places.append(("dead letter", queue.queue_name, keys.dead))
    pipe = client.pipeline(transaction=False)
    for _, _, key in places:
        pipe.xrevrange(key, count=SEARCHED_ENTRIES)
    wanted = frame_id.encode()
    found: dict[str, list[dict[str, Any]]] = {"result": [], "queued": [], "dead letter": []}
    for (kind, where, _), reply in zip(places, pipe.execute(raise_on_error=False), strict=True):
        if not isinstance(reply, list):
            continue
        for entry_id, fields in reply:
            if fields.get(b"frame_id") == wanted:
                found[kind].append({"where": where, "entry_id": entry_id.decode(), "fields": _shown(fields)})
    results = [_result_view(item, trace_url) for item in found["result"]]
    return {
        "frame_id": frame_id,
        "results": results,
        "queued": found["queued"],
        "dead_letters": [{**item, "reason": item["fields"].get("dead_reason", "")} for item in found["dead letter"]],
        "searched": SEARCHED_ENTRIES,
    }


def _result_view(item: dict[str, Any], trace_url: str) -> dict[str, Any]:
    fields = item["fields"]
    trace_id = trace_id_of(fields.get("trace_context", ""))
    return {
        "result_stream": item["where"],
        "entry_id": item["entry_id"],
        "processor_id": fields.get("processor_id", ""),
        "camera_id": fields.get("camera_id", ""),
        "captured_at": fields.get("captured_at", ""),
        "finished_at": fields.get("timestamp", ""),
        "latency_ms": fields.get("latency_ms", ""),
        "trace_id": trace_id,
        "trace_url": trace_url.replace("{trace_id}", trace_id) if trace_url and trace_id else None,
        "fields": {
            name: value
            for name, value in fields.items()
            if name not in ("frame_id", "trace_context", "processor_id", "camera_id")
        },
    }


def _shown(fields: dict[bytes, bytes]) -> dict[str, str]:
    """Text fields as they are; an image or other bytes by their size (a page shows no megabytes)."""
    shown = {}
    for name, value in fields.items():
        key = name.decode("utf-8", "replace")
        try:
            text = value.decode()
        except UnicodeDecodeError:
            text = f"<{len(value)} bytes>"
        shown[key] = text if len(text) <= 2000 else f"<{len(text)} characters>"
    return shown
