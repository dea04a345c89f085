"""``frameflow ingest`` (issue 18, part 2): the original system's ``frames:metadata`` entries, routed.

The entries are shaped exactly as detektr's capture service writes them (``frame_id``,
``camera_id``, ``timestamp`` ISO-8601, ``size_bytes``, ``width``, ``height``, ``format``,
``trace_context`` JSON, ``metadata`` JSON with ``detection_type``), plus the image in
``image_data`` (base64) or named by a configured field. Ingest runs as a real process; what it
cannot map is dead-lettered with the reason and counted, and it goes on.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline.domain.keys import ingest_counts_key
from pipeline.domain.telemetry import trace_id_of

from .processes import ROOT, WorkerProcess
from .processor_harness import IMAGE, queue_entries, register_fake, wait_for

STREAM = "frames:metadata"
DEAD = "frames:metadata:dead"
GROUP = "frameflow-ingest"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def original_entry(frame_id: str, **changes: Any) -> dict[str, Any]:
    """An entry as detektr's capture service writes it to ``frames:metadata``."""
    entry: dict[str, Any] = {
        "frame_id": frame_id,
        "camera_id": "front_door",
        "timestamp": "2026-01-15T12:34:56.789012",
        "size_bytes": str(len(IMAGE)),
        "width": "1920",
        "height": "1080",
        "format": "jpeg",
        "trace_context": json.dumps({"traceparent": TRACEPARENT}),
        "metadata": json.dumps({"detection_type": "face", "fps": 5}),
        "image_data": base64.b64encode(IMAGE).decode(),
    }
    entry.update(changes)
    return {name: value for name, value in entry.items() if value is not None}


def ingest_process(redis_url: str, tmp_path: Path, image_root: Path) -> WorkerProcess:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("REDIS_", "FRAMEFLOW_", "OTEL_"))}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    command = [
        *(sys.executable, "-m", "pipeline.tools.cli", "--redis-url", redis_url, "ingest"),
        *("--map", "face=face_detection", "--map", "object=object_detection"),
        *("--image-key-field", "image_key", "--image-path-field", "image_path", "--image-root", str(image_root)),
    ]
    return WorkerProcess(command, env, tmp_path / "ingest.log")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    (root / "f-path.jpg").write_bytes(IMAGE)
    (tmp_path / "outside.jpg").write_bytes(IMAGE)
    return root


@pytest.fixture
def ingest(redis_url: str, redis_client: redis.Redis, tmp_path: Path, images: Path) -> Iterator[WorkerProcess]:
    process = ingest_process(redis_url, tmp_path, images)
    try:
        yield process
    finally:
        exit_code = process.stop()
    assert exit_code == 0, process.log_tail()
    log = process.log_path.read_text()
    assert "Traceback" not in log, log


def counts(client: redis.Redis) -> dict[str, int]:
    raw = client.hgetall(ingest_counts_key("frameflow", STREAM))
    return {name.decode(): int(value) for name, value in raw.items()}


def dead_letters(client: redis.Redis) -> dict[str, dict[str, str]]:
    """Dead letters by the ``frame_id`` of their entry (or its source id when it had none)."""
    letters = {}
    for _, fields in client.xrange(DEAD):
        text = _flat(fields)
        letters[text.get("frame_id") or text["source_id"]] = text
    return letters


def pending(client: redis.Redis) -> int:
    return int(client.xpending(STREAM, GROUP)["pending"])


def test_original_entries_are_routed_with_their_id_image_and_trace(
    ingest: WorkerProcess, redis_client: redis.Redis, images: Path
) -> None:
    register_fake(redis_client, "faces-1", ("face_detection",))
    redis_client.set("capture:image:f-key", IMAGE)
    redis_client.xadd(STREAM, original_entry("1768480496789_front_door_000001"))
    redis_client.xadd(STREAM, original_entry("f-key", image_data=None, image_key="capture:image:f-key"))
    redis_client.xadd(STREAM, original_entry("f-path", image_data=None, image_path="f-path.jpg"))

    queued = wait_for(
        lambda: len(queue_entries(redis_client, "faces-1")) == 3 and queue_entries(redis_client, "faces-1")
    )
    frames = [_flat(fields) for fields in queued]
    assert [fields[b"image"] for fields in queued] == [IMAGE] * 3  # raw on the processor queue
    assert [frame["frame_id"] for frame in frames] == ["1768480496789_front_door_000001", "f-key", "f-path"]
    for frame in frames:
        assert frame["camera_id"] == "front_door"
        assert (frame["width"], frame["height"], frame["format"]) == ("1920", "1080", "jpeg")
        assert "image_data" not in frame
        assert trace_id_of(frame["trace_context"]) == TRACE_ID, "the entry's trace goes on"
        assert json.loads(frame["metadata"])["detection_type"] == "face"
    wait_for(lambda: pending(redis_client) == 0, what="every routed entry to be acknowledged")
    assert counts(redis_client) == {"routed": 3}
    assert redis_client.xlen(DEAD) == 0


def test_entries_that_cannot_be_frames_are_dead_lettered_with_the_reason_and_ingest_goes_on(
    ingest: WorkerProcess, redis_client: redis.Redis
) -> None:
    register_fake(redis_client, "faces-1", ("face_detection",))
    malformed = {
        "no-camera": original_entry("no-camera", camera_id=None),
        "no-image": original_entry("no-image", image_data=None),
        "gesture": original_entry("gesture", metadata=json.dumps({"detection_type": "gesture"})),
        "no-type": original_entry("no-type", metadata=json.dumps({"fps": 5})),
        "yesterday": original_entry("yesterday", timestamp="yesterday at noon"),
        "no-key": original_entry("no-key", image_data=None, image_key="capture:image:gone"),
        "no-file": original_entry("no-file", image_data=None, image_path="missing.jpg"),
        "outside": original_entry("outside", image_data=None, image_path="../outside.jpg"),
        "not-base64": original_entry("not-base64", image_data="%%% not base64 %%%"),
        "bad id": original_entry("bad id"),
    }
    for entry in malformed.values():
        redis_client.xadd(STREAM, entry)
    redis_client.xadd(STREAM, {"junk": b"\xff\xfe"})  # not even text
    redis_client.xadd(STREAM, original_entry("after-the-bad-ones"))

    wait_for(lambda: queue_entries(redis_client, "faces-1"), what="the good entry after the bad ones to be routed")
    wait_for(lambda: redis_client.xlen(DEAD) == len(malformed) + 1, what="every bad entry to be dead-lettered")
    letters = dead_letters(redis_client)
    expected = {
        "no-camera": ("missing_field", "camera_id"),
        "no-image": ("no_image", "no image"),
        "gesture": ("unknown_detection_type", "'gesture'"),
        "no-type": ("no_detection_type", "detection_type"),
        "yesterday": ("bad_timestamp", "'yesterday at noon'"),
        "no-key": ("bad_image_reference", "capture:image:gone"),
        "no-file": ("bad_image_reference", "missing.jpg"),
        "outside": ("bad_image_reference", "outside"),
        "not-base64": ("bad_image", "base64"),
        "bad id": ("bad_frame", "frame_id"),
    }
    for frame_id, (kind, said) in expected.items():
        assert letters[frame_id]["ingest_kind"] == kind, (frame_id, letters[frame_id])
        assert said in letters[frame_id]["ingest_reason"], (frame_id, letters[frame_id]["ingest_reason"])
        assert letters[frame_id]["source_stream"] == STREAM
    junk = [letter for letter in letters.values() if letter["ingest_kind"] == "bad_field"]
    assert len(junk) == 1 and "not UTF-8" in junk[0]["ingest_reason"]
    wait_for(lambda: pending(redis_client) == 0, what="every entry, good or bad, to be acknowledged")
    tally = counts(redis_client)
    assert tally["routed"] == 1
    assert tally["dead_lettered"] == len(malformed) + 1
    assert tally["dead_lettered:bad_image_reference"] == 3
    assert ingest.alive(), "ingest never stops for an entry"
    log = ingest.log_path.read_text()
    assert "Dead-lettered entry" in log and "unknown detection type 'gesture'" in log


def test_entries_for_a_capability_no_one_serves_yet_are_parked_and_acknowledged(
    ingest: WorkerProcess, redis_client: redis.Redis
) -> None:
    redis_client.xadd(STREAM, original_entry("for-later", metadata=json.dumps({"detection_type": "object"})))
    wait_for(lambda: counts(redis_client).get("parked") == 1, what="the entry to be parked")
    assert pending(redis_client) == 0
    assert redis_client.xlen("frameflow:parked:{object_detection}") == 1


def _flat(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {name.decode(): value.decode("utf-8", "replace") for name, value in fields.items()}
