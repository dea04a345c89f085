"""What the pages show, as JSON: one read of Redis turned into the overview's numbers.

The numbers are ``frameflow top``'s (:mod:`pipeline.tools.overview`): the same snapshot, the same
states. The dashboard adds what a table cannot show, processing-time percentiles, from the newest
entries of each result stream (the ``latency_ms`` every result carries), and from the same entries
each camera's newest picture (:mod:`.pictures`); beside them, each camera's live preview
(:mod:`pipeline.domain.previews`), named by a URL that changes only with the frame.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import redis

from pipeline.cameras.state import CameraStateStore
from pipeline.domain.previews import preview_versions
from pipeline.domain.process_entries import ProcessEntries
from pipeline.domain.registry import ProcessorInfo
from pipeline.mqtt.mapping import ResultMapping
from pipeline.tools.overview import PipelineSnapshot, processing_rates, processor_state, take_snapshot

from .pictures import newest_pictures

#: How many of a result stream's newest entries the percentiles (and the cameras' pictures) are taken from.
RESULT_SAMPLE = 200


def read_overview(client: redis.Redis, namespace: str, mapping: ResultMapping) -> dict[str, Any]:
    """Everything the overview and cameras pages show, in a few round trips (see the module docstring)."""
    snapshot = take_snapshot(client, namespace)
    live = [info for info in snapshot.processors if info.alive]
    processes = ProcessEntries(client, namespace).of_each(info.processor_id for info in live)
    results = _recent_results(client, live)
    latencies, newest_result_ms = _latencies(results)
    rates = processing_rates(snapshot)
    return {
        "at": snapshot.at,
        "processors": [
            _processor_view(info, snapshot, rates, latencies.get(info.processor_id, []), processes)
            for info in snapshot.processors
        ],
        "queues": [{**dataclasses.asdict(queue), "dropped": queue.dropped} for queue in snapshot.queues],
        "parked": [dataclasses.asdict(item) for item in snapshot.parked],
        "cameras": CameraStateStore(client, namespace).read(),
        "pictures": newest_pictures(mapping, results),
        "previews": _previews(client, namespace),
        "totals": _totals(snapshot, rates),
        "newest_result_ms": newest_result_ms,
    }


def _previews(client: redis.Redis, namespace: str) -> dict[str, dict[str, str]]:
    """Camera -> its live preview's URL, versioned by the frame's id: a page fetches an image only when it changed."""
    return {
        camera: {"url": f"/api/previews/{quote(camera)}?v={quote(frame_id)}", "frame_id": frame_id}
        for camera, frame_id in preview_versions(client, namespace).items()
    }


def chart_point(overview: dict[str, Any]) -> dict[str, Any]:
    """The charts' point of one read: frames/s and p95 processing time, in all and per processor."""
    processors = [view for view in overview["processors"] if view["state"] != "dead"]
    return {
        "at": overview["at"],
        "frames_per_s": overview["totals"]["frames_per_s"],
        "by_processor": {
            view["processor_id"]: {"frames_per_s": view["frames_per_s"], "p95_ms": view["p95_ms"]}
            for view in processors
        },
    }


def _processor_view(
    info: ProcessorInfo,
    snapshot: PipelineSnapshot,
    rates: dict[str, float],
    latencies: list[float],
    processes: dict[str, list[ProcessorInfo]],
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "processor_id": info.processor_id,
        "state": processor_state(info, snapshot.at),
        "alive": info.alive,
        "draining": info.draining,
    }
    if not info.alive:
        return view
    return {
        **view,
        "capabilities": list(info.capabilities),
        "capacity": info.capacity,
        "in_flight": info.in_flight,
        "processed": info.processed,
        "failed": info.failed,
        "rejected": info.rejected,
        "frames_per_s": rates.get(info.processor_id),
        "latency_ms": info.latency_ms,
        "p50_ms": _percentile(latencies, 0.50),
        "p95_ms": _percentile(latencies, 0.95),
        "heartbeat_age_s": max(0.0, snapshot.at - info.heartbeat_at),
        "processes": max(1, len(processes.get(info.processor_id, []))),
        "queue_name": info.queue_name,
        "host": f"{info.host}:{info.pid}",
        "version": info.version,
    }


def _totals(snapshot: PipelineSnapshot, rates: dict[str, float]) -> dict[str, Any]:
    dead = sum(1 for info in snapshot.processors if not info.alive)
    stale = sum(1 for info in snapshot.processors if info.is_stale(snapshot.at))
    return {
        "live": len(snapshot.processors) - dead - stale,
        "stale": stale,
        "dead": dead,
        "frames_per_s": sum(rates.values()),
        "backlog": sum(queue.backlog for queue in snapshot.queues),
        "dead_letters": sum(queue.dead_letters for queue in snapshot.queues),
    }


def _recent_results(client: redis.Redis, processors: Iterable[ProcessorInfo]) -> list[tuple[str, str, dict[str, str]]]:
    """The newest entries of every live processor's result stream, newest first per stream, as
    ``(stream, entry_id, fields)``: one pipelined round trip."""
    streams = sorted({info.result_stream for info in processors if info.result_stream})
    if not streams:
        return []
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xrevrange(stream, count=RESULT_SAMPLE)
    entries = []
    for stream, reply in zip(streams, pipe.execute(raise_on_error=False), strict=True):
        if not isinstance(reply, list):
            continue  # not a stream (yet): nothing to show
        for entry_id, fields in reply:
            text = {name.decode(errors="replace"): value.decode(errors="replace") for name, value in fields.items()}
            entries.append((stream, entry_id.decode(), text))
    return entries


def _latencies(results: list[tuple[str, str, dict[str, str]]]) -> tuple[dict[str, list[float]], int | None]:
    """The ``latency_ms`` of each processor's results, and the id time (ms) of the newest result."""
    latencies: dict[str, list[float]] = {}
    newest: int | None = None
    for _, entry_id, fields in results:
        newest = max(newest or 0, int(entry_id.split("-")[0]))
        try:
            latencies.setdefault(fields["processor_id"], []).append(float(fields["latency_ms"]))
        except (KeyError, ValueError):
            continue  # not a result of ours: the percentiles skip it
    return latencies, newest


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]
