"""Results: what ``process_frame`` returns, published as a flat stream entry,
and a reader for the consumers of result streams (a Home Assistant bridge, an
automation engine).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import redis

#: Fields frameflow adds to every result (frame_id, camera_id and processor_id always win;
#: the others only where the processor's result has no such key).
RESULT_FIELDS = ("frame_id", "camera_id", "processor_id", "timestamp", "latency_ms", "captured_at", "trace_context")

#: Largest result entry a reader takes (names and values together); a processor's result is far smaller.
MAX_RESULT_BYTES = 1024 * 1024

logger = logging.getLogger(__name__)


def result_problem(fields: Mapping[bytes, bytes], max_bytes: int = MAX_RESULT_BYTES) -> str | None:
    """Why a result-stream entry is not a result (``None`` when it is one).

    Anyone who can write to the stream can put anything there; a reader skips such an entry with
    this reason instead of handing a consumer text altered by U+FFFD replacements, a result that
    names no frame, or megabytes it never asked for.
    """
    if not fields.get(b"frame_id"):
        return "no frame_id: not a result"
    size = sum(len(name) + len(value) for name, value in fields.items())
    if size > max_bytes:
        return f"entry of {size} bytes is over the {max_bytes} bytes a result may have"
    for name, value in fields.items():
        try:
            name.decode()
            value.decode()
        except UnicodeDecodeError:
            return f"field {name.decode('utf-8', 'replace')!r} is not UTF-8 text"
    return None


def encoding_problem(result: Any) -> str | None:
    """Why ``result`` cannot be published as a result entry without losing something (``None``
    when it can): :func:`result_fields` writes what a processor returns as well as it can, but a
    result published on purpose (``ProcessorClient.publish_result``) is refused instead."""
    if not isinstance(result, Mapping):
        return f"a result is a dict, not {type(result).__name__}"
    if not result.get("frame_id"):
        return "a result needs a frame_id (readers skip entries without one)"
    for name, value in result.items():
        if not isinstance(name, str) or not name:
            return f"field name {name!r} is not a non-empty string"
        if isinstance(value, bytes):
            try:
                value.decode()
            except UnicodeDecodeError:
                return f"field {name!r} holds bytes that are not UTF-8 text"
        elif isinstance(value, float) and not math.isfinite(value):
            return f"field {name!r} is {value!r}, which JSON readers cannot take"
        elif not isinstance(value, str | int | float | bool | type(None)):
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError, RecursionError) as error:
                return f"field {name!r} cannot be encoded as JSON: {error}"
    return None


def result_fields(
    result: Mapping[str, Any],
    frame: Mapping[str, str],
    *,
    processor_id: str,
    latency_ms: float,
    trace_context: str | None = None,
) -> dict[str, str]:
    """Flatten a processor's result: scalars as text, nested values as JSON, plus
    the frame's identity, the processor and the processing latency."""
    fields: dict[str, str] = {}
    for name, value in result.items():
        if isinstance(value, str):
            fields[str(name)] = value
        elif isinstance(value, bool) or value is None:
            fields[str(name)] = "null" if value is None else "true" if value else "false"  # json.dumps's words
        elif isinstance(value, int | float):
            fields[str(name)] = repr(value)
        elif isinstance(value, bytes):
            fields[str(name)] = value.decode("utf-8", "replace")
        else:
            fields[str(name)] = json.dumps(value, separators=(",", ":"), default=str)
    # The frame's identity is authoritative; the rest is added where the processor did not say.
    # (assignments and "in" tests, not update(**...) and setdefault: this runs for every frame)
    fields["frame_id"] = frame.get("frame_id", "")
    fields["camera_id"] = frame.get("camera_id", "")
    fields["processor_id"] = processor_id
    if "timestamp" not in fields:
        fields["timestamp"] = utc_now_iso()
    if "latency_ms" not in fields:
        fields["latency_ms"] = f"{latency_ms:.3f}"
    if "captured_at" not in fields:
        fields["captured_at"] = frame.get("timestamp", "")
    if "trace_context" not in fields:
        fields["trace_context"] = trace_context if trace_context is not None else frame.get("trace_context", "{}")
    return fields


#: The second :func:`utc_now_iso` last wrote, and its text up to the seconds ("2026-12-07T21:03:05").
_second_text: tuple[int, str] = (-1, "")


def utc_now_iso(now: float | None = None) -> str:
    """``datetime.now(UTC).isoformat()`` (of ``now``, epoch seconds, when given), the same text, at a
    fraction of its cost: a result's timestamp is written for every frame, and ``isoformat`` with its
    UTC offset was a twentieth of a no-op processor's own work per frame. The date and time are
    formatted once per second."""
    global _second_text
    if now is None:
        now = time.time()
    second = int(now)
    micro = round((now - second) * 1_000_000)
    if micro == 1_000_000:
        second, micro = second + 1, 0
    cached_second, text = _second_text
    if cached_second != second:
        text = datetime.fromtimestamp(second, UTC).isoformat()[:19]
        _second_text = (second, text)
    return f"{text}.{micro:06d}+00:00" if micro else f"{text}+00:00"


class ResultReader:
    """Iterates a result stream through a consumer group, acknowledging as it goes.

    An entry is acknowledged when the next one is asked for, so a consumer that
    crashes while handling one gets it again on restart (its pending entries are
    read first).

    Parameters:
      client: the Redis client.
      stream: e.g. ``faces:detected``.
      group: the consumer group (one per kind of consumer: ``ha-bridge``).
      consumer: this consumer's name (default: host and pid).
      block_ms: how long one read waits; iteration ends after an empty read when ``follow`` is false.
      max_entry_bytes: larger entries are skipped (see below).

    Entries that are not results (:func:`result_problem`: not UTF-8, no ``frame_id``, too large)
    are acknowledged and skipped, never raised: each is logged with its reason and counted in
    :attr:`rejected` (reason → count), so one bad writer cannot stop a consumer.

    Processors cap result streams at about ``FRAMEFLOW_RESULTS_MAXLEN`` entries (``XADD ... MAXLEN ~``):
    a consumer that falls that many results behind loses the oldest, as with any capped stream
    (a pending entry trimmed away comes back empty and is acknowledged away).
    """

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        *,
        consumer: str | None = None,
        block_ms: int = 1000,
        follow: bool = True,
        start: str = "0",
        max_entry_bytes: int = MAX_RESULT_BYTES,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self.block_ms = block_ms
        self.follow = follow
        self.max_entry_bytes = max_entry_bytes
        #: Entries skipped, by reason.
        self.rejected: Counter[str] = Counter()
        try:
            client.xgroup_create(stream, group, id=start, mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def __iter__(self) -> Iterator[dict[str, str]]:
        unacked: bytes | None = None
        cursor = "0"  # our own pending entries first, then new ones
        try:
            while True:
                response = self.client.xreadgroup(
                    self.group, self.consumer, {self.stream: cursor}, count=16, block=self.block_ms
                )
                entries = response[0][1] if response else []
                if cursor != ">" and not entries:
                    cursor = ">"  # no pending entries of ours left: new ones from now on
                    continue
                if not entries and not self.follow:
                    return
                for entry_id, fields in entries:
                    if unacked is not None:
                        self.client.xack(self.stream, self.group, unacked)
                        unacked = None
                    if cursor != ">":
                        cursor = entry_id.decode()
                    if not fields:
                        # A pending entry deleted since (the stream was trimmed): nothing to hand over.
                        self.client.xack(self.stream, self.group, entry_id)
                        continue
                    problem = result_problem(fields, self.max_entry_bytes)
                    if problem is not None:
                        self._reject(entry_id, problem)
                        continue
                    unacked = entry_id
                    yield {name.decode(): value.decode() for name, value in fields.items()}
        finally:
            if unacked is not None:
                self.client.xack(self.stream, self.group, unacked)

    def _reject(self, entry_id: bytes, problem: str) -> None:
        logger.warning("Skipping entry %s of %s: %s.", entry_id.decode(), self.stream, problem)
        self.rejected[problem] += 1
        self.client.xack(self.stream, self.group, entry_id)


def wait_for_results(client: redis.Redis, stream: str, count: int, timeout_s: float) -> list[dict[str, str]]:
    """Read ``stream`` from the start until ``count`` entries arrived or ``timeout_s`` passed (tests, demo)."""
    results: list[dict[str, str]] = []
    last_id = "0"
    deadline = time.monotonic() + timeout_s
    while len(results) < count and time.monotonic() < deadline:
        block_ms = max(1, min(1000, int((deadline - time.monotonic()) * 1000)))
        for _, entries in client.xread({stream: last_id}, block=block_ms) or []:
            for entry_id, fields in entries:
                results.append({name.decode(): value.decode("utf-8", "replace") for name, value in fields.items()})
                last_id = entry_id
    return results
