"""Images on the wire: raw bytes in their own field, base64 only at the processor's door when read.

A frame's image travels as its own binary stream field beside the envelope; the seed's
``frame_data[b"image_data"]`` (base64) is computed only when ``process_frame`` reads it, while
``process_batch`` and :func:`~pipeline.domain.frame_data.frame_image` get the raw bytes. A frame
for one processor carries its image inline whatever its size; the stored image (claim check) is
for fan-out and parking. Entries written before this layout (base64 inline, base64 stored) still
process.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

import pipeline.domain.frame_data as frame_data_module
from middleware.routing import CLAIM_CHECK_ABOVE
from pipeline import FrameProducer
from pipeline.domain.frame_data import FrameData, frame_image
from pipeline.domain.keys import base64_image_key, image_key, image_refs_key
from pipeline.streams.keys import queue_keys

from .processor_harness import RecordingProcessor, publish, queue_entries, register_fake, running, wait_for

FACE, OBJECT = "face_detection", "object_detection"

#: Every byte value, quotes, backslashes and NULs included: what JSON or UTF-8 would mangle.
ALL_BYTES = b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9"


@pytest.fixture
def producer(redis_url: str) -> Any:
    producer = FrameProducer(redis_url, max_age_ms=60_000)
    yield producer
    producer.close()


class EncodeCounter:
    """Stands in for :mod:`base64` inside :mod:`pipeline.domain.frame_data`, counting encodes."""

    def __init__(self) -> None:
        self.encodes = 0
        self.b64decode = base64.b64decode

    def b64encode(self, data: bytes) -> bytes:
        self.encodes += 1
        return base64.b64encode(data)


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> EncodeCounter:
    counting = EncodeCounter()
    monkeypatch.setattr(frame_data_module, "base64", counting)
    return counting


def image_keys(client: redis.Redis) -> list[bytes]:
    return [key for key in client.scan_iter("frameflow:image*") if not key.startswith(b"frameflow:image-refs:")]


# -- the wire --------------------------------------------------------------------------------------


def test_the_image_is_a_raw_field_of_the_entry_beside_the_envelope(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    register_fake(redis_client, "faces-1", (FACE,))
    decision = publish(producer, [FACE], image=ALL_BYTES)
    [entry] = queue_entries(redis_client, "faces-1")  # read with plain redis-py
    assert entry[b"image"] == ALL_BYTES  # byte for byte, no base64
    assert b"image_data" not in entry and b"image_ref" not in entry
    encoded = base64.b64encode(ALL_BYTES)[:64]
    assert not any(encoded in value for value in entry.values())  # no base64 of it anywhere in the entry
    envelope = json.loads(entry[b"message"])
    assert envelope["args"] == [] and envelope["options"]["binary_fields"] == ["image"]
    assert entry[b"frame_id"] == decision.frame_id.encode()


def test_a_frame_for_one_processor_carries_even_a_large_image_inline(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    register_fake(redis_client, "faces-1", (FACE,))
    large = ALL_BYTES * (4 * CLAIM_CHECK_ABOVE // len(ALL_BYTES))
    publish(producer, [FACE], image=large)
    [entry] = queue_entries(redis_client, "faces-1")
    assert entry[b"image"] == large and b"image_ref" not in entry
    assert image_keys(redis_client) == []


def test_a_fanned_out_large_image_is_stored_once_raw(redis_client: redis.Redis, producer: FrameProducer) -> None:
    register_fake(redis_client, "faces-1", (FACE,))
    register_fake(redis_client, "objects-1", (OBJECT,))
    large = ALL_BYTES * (2 * CLAIM_CHECK_ABOVE // len(ALL_BYTES))
    decision = publish(producer, [FACE, OBJECT], image=large)
    key = image_key("frameflow", decision.frame_id)
    assert image_keys(redis_client) == [key.encode()]
    assert redis_client.get(key) == large  # raw, not base64
    assert int(redis_client.get(image_refs_key("frameflow", decision.frame_id)) or 0) == 2
    for processor_id in ("faces-1", "objects-1"):
        [entry] = queue_entries(redis_client, processor_id)
        assert entry[b"image_ref"] == key.encode() and b"image" not in entry


def test_a_frame_parked_for_one_capability_and_routed_for_another_is_claim_checked(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    register_fake(redis_client, "faces-1", (FACE,))
    large = ALL_BYTES * (2 * CLAIM_CHECK_ABOVE // len(ALL_BYTES))
    decision = publish(producer, [FACE, "nobody"], image=large)
    assert decision.targets == ("faces-1",) and decision.parked == ("nobody",)
    assert redis_client.get(image_key("frameflow", decision.frame_id)) == large


def test_a_fanned_out_small_image_travels_inline_in_each_copy(
    redis_client: redis.Redis, producer: FrameProducer
) -> None:
    register_fake(redis_client, "faces-1", (FACE,))
    register_fake(redis_client, "objects-1", (OBJECT,))
    small = ALL_BYTES[: min(len(ALL_BYTES), CLAIM_CHECK_ABOVE)]
    publish(producer, [FACE, OBJECT], image=small)
    assert image_keys(redis_client) == []
    for processor_id in ("faces-1", "objects-1"):
        [entry] = queue_entries(redis_client, processor_id)
        assert entry[b"image"] == small


# -- the processor's door -------------------------------------------------------------------------


def test_image_data_is_base64_encoded_only_when_read_and_once(counter: EncodeCounter) -> None:
    frame_data = FrameData({b"frame_id": b"f-1", b"width": b"4"}, image=ALL_BYTES)
    assert b"image_data" in frame_data and len(frame_data) == 3
    assert set(frame_data) == {b"frame_id", b"width", b"image_data"}
    assert frame_image(frame_data) == ALL_BYTES and frame_data[b"width"] == b"4"
    copied = frame_data.copy()
    copied[b"width"] = b"5"  # a copy is the seed code's own
    assert frame_data[b"width"] == b"4" and frame_image(copied) == ALL_BYTES
    assert counter.encodes == 0
    assert frame_data[b"image_data"] == base64.b64encode(ALL_BYTES)
    assert frame_data.get(b"image_data") == base64.b64encode(ALL_BYTES)
    assert counter.encodes == 1
    assert dict(frame_data) == {b"frame_id": b"f-1", b"width": b"4", b"image_data": base64.b64encode(ALL_BYTES)}


def test_a_seed_dict_still_gives_its_raw_image() -> None:
    assert frame_image({b"frame_id": b"f-1", b"image_data": base64.b64encode(ALL_BYTES)}) == ALL_BYTES


class BatchRecorder(RecordingProcessor):
    """Records each frame of a batch as the raw image :func:`frame_image` gives and the mapping itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.images: list[bytes] = []
        self.mappings: list[Any] = []

    async def process_batch(self, frames: list[dict[bytes, bytes]]) -> list[dict | BaseException | None]:
        with self._frames_lock:
            self.images += [frame_image(frame) for frame in frames]
            self.mappings += frames
        return [{"ok": 1} for _ in frames]


def test_process_batch_gets_the_raw_bytes_without_any_base64(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer, counter: EncodeCounter
) -> None:
    processor = BatchRecorder("faces-1", [FACE], redis_url)
    with running(processor, redis_client):
        publish(producer, [FACE], image=ALL_BYTES)
        wait_for(lambda: processor.images, what="the batch to run")
    assert processor.images == [ALL_BYTES]
    assert isinstance(processor.mappings[0], FrameData)
    assert counter.encodes == 0  # nothing on the way base64-encoded it


def test_process_frame_reads_the_seeds_base64_image_data(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    processor = RecordingProcessor("faces-1", [FACE], redis_url)
    with running(processor, redis_client):
        publish(producer, [FACE], image=ALL_BYTES)
        wait_for(lambda: processor.frames, what="the frame")
    assert processor.frames[0][b"image_data"] == base64.b64encode(ALL_BYTES)


def test_a_retried_frame_keeps_its_raw_image_byte_for_byte(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    class FailsOnce(RecordingProcessor):
        max_retries = 1

        async def process_frame(self, frame_data: dict[bytes, bytes]) -> dict | None:
            result = await super().process_frame(frame_data)
            if self.calls == 1:
                raise RuntimeError("the first attempt fails")
            return result

    processor = FailsOnce("faces-1", [FACE], redis_url)
    with running(processor, redis_client):
        publish(producer, [FACE], image=ALL_BYTES)  # the retry waits in the delayed set, image and all
        wait_for(lambda: len(processor.frames) == 2, what="the retry")
    assert [base64.b64decode(frame[b"image_data"]) for frame in processor.frames] == [ALL_BYTES, ALL_BYTES]


# -- entries written before images travelled raw ----------------------------------------------------


def old_entry(processor_id: str, frame_id: str, **image: str) -> dict[str, str]:
    """An entry as routers wrote them before this layout: every field text, the image base64
    inline (``image_data``) or stored (``image_ref``), and an envelope with no ``binary_fields``."""
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    envelope = {
        "queue_name": f"frames.ready.{processor_id}",
        "actor_name": f"process_frame.{processor_id}",
        "args": [],
        "kwargs": {},
        "options": {
            "frame": True,
            "captured_at_ms": now_ms,
            "max_age_ms": 60_000,
            "capabilities": [FACE],
            "processor": processor_id,
        },
        "message_id": frame_id,
        "message_timestamp": now_ms,
    }
    return {
        "frame_id": frame_id,
        "camera_id": "cam-old",
        "timestamp": datetime.now(UTC).isoformat(),
        "width": "640",
        "height": "480",
        "format": "jpeg",
        "metadata": "{}",
        "trace_context": "{}",
        **image,
        "message": json.dumps(envelope),
    }


def test_old_format_entries_in_a_queue_still_process(redis_url: str, redis_client: redis.Redis) -> None:
    encoded = base64.b64encode(ALL_BYTES).decode()
    inline_id, stored_id = uuid.uuid4().hex, uuid.uuid4().hex
    stored_key = base64_image_key("frameflow", stored_id)
    redis_client.set(stored_key, encoded, px=60_000)
    redis_client.set(image_refs_key("frameflow", stored_id), 1, px=60_000)
    register_fake(redis_client, "faces-1", (FACE,))
    stream = queue_keys("frameflow", "frames.ready.faces-1").stream
    redis_client.xadd(stream, old_entry("faces-1", inline_id, image_data=encoded))  # type: ignore[arg-type]
    redis_client.xadd(stream, old_entry("faces-1", stored_id, image_ref=stored_key))  # type: ignore[arg-type]

    seen: dict[str, bytes] = {}
    lock = threading.Lock()

    class Raw(RecordingProcessor):
        async def process_frame(self, frame_data: dict[bytes, bytes]) -> dict | None:
            with lock:
                seen[frame_data[b"frame_id"].decode()] = frame_image(frame_data)
            return await super().process_frame(frame_data)

    processor = Raw("faces-1", [FACE], redis_url)
    with running(processor, redis_client):
        wait_for(lambda: len(processor.frames) == 2, what="both old entries to be processed")
        wait_for(lambda: redis_client.xlen(stream) == 0, what="both acks")
        wait_for(lambda: redis_client.get(stored_key) is None, what="the stored image's release")
    assert sorted(processor.frame_ids()) == sorted([inline_id, stored_id])
    assert all(frame[b"image_data"] == encoded.encode() for frame in processor.frames)
    assert seen == {inline_id: ALL_BYTES, stored_id: ALL_BYTES}


def test_an_old_format_base64_entry_that_is_re_routed_travels_raw_after(
    redis_url: str, redis_client: redis.Redis
) -> None:
    from middleware.routing import CapabilityRouter
    from pipeline.streams.broker import RedisStreamsBroker
    from pipeline.streams.wire import decode_entry

    register_fake(redis_client, "faces-2", (FACE,))
    entry = {
        name.encode(): value.encode()
        for name, value in old_entry("faces-1", "f-old", image_data=base64.b64encode(ALL_BYTES).decode()).items()
    }
    stream = "frameflow:parked:{face_detection}"
    entry_id = redis_client.xadd(stream, entry)  # type: ignore[arg-type]
    router = CapabilityRouter()
    broker = RedisStreamsBroker(redis_url, middleware=[router])
    try:
        message = decode_entry(entry)
        message.options.pop("processor")
        decision = router.move(broker, stream, entry_id, message, entry)
    finally:
        broker.close()
    assert decision is not None and decision.targets == ("faces-2",)
    [moved] = queue_entries(redis_client, "faces-2")
    assert moved[b"image"] == ALL_BYTES and b"image_data" not in moved


def test_the_frame_data_of_an_old_entry_decodes_its_base64_once() -> None:
    frame_data = FrameData({b"frame_id": b"f-1"}, encoded=base64.b64encode(ALL_BYTES))
    assert frame_data.image == ALL_BYTES and frame_data.image is frame_data.image
    assert frame_data[b"image_data"] == base64.b64encode(ALL_BYTES)


def test_an_old_entry_with_bad_base64_is_an_image_decode_error() -> None:
    from pipeline.errors import ImageDecodeError

    with pytest.raises(ImageDecodeError, match="frame f-1: image_data is not valid base64"):
        frame_image(FrameData({b"frame_id": b"f-1"}, encoded=b"not base64!"))


# -- what reads frames after processing ------------------------------------------------------------


def test_a_dead_lettered_frame_keeps_its_raw_image_and_is_processed_when_requeued(
    redis_url: str, redis_client: redis.Redis, producer: FrameProducer
) -> None:
    processor = RecordingProcessor("faces-1", [FACE], redis_url)  # max_retries = 0: dead at the first failure
    processor.failing.set()
    dead = queue_keys("frameflow", processor.queue_name).dead
    with running(processor, redis_client):
        publish(producer, [FACE], image=ALL_BYTES)
        wait_for(lambda: redis_client.xlen(dead) == 1, what="the dead letter")
        [(_, letter)] = redis_client.xrange(dead)
        assert letter[b"image"] == ALL_BYTES  # kept raw, once: the envelope holds no copy
        assert json.loads(letter[b"message"])["args"] == []
        processor.failing.clear()
        assert processor.broker is not None
        assert processor.broker.dead_letter_queue(processor.queue_name).requeue() == 1
        wait_for(lambda: len(processor.frames) == 2, what="the requeued frame")
    assert base64.b64decode(processor.frames[1][b"image_data"]) == ALL_BYTES


def test_a_kept_snapshot_is_stored_raw_and_one_kept_as_base64_still_reads(redis_client: redis.Redis) -> None:
    import io

    from PIL import Image

    from pipeline.domain.kept_images import kept_image, read_kept_image
    from pipeline.domain.keys import snapshot_key

    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(buffer, format="PNG")
    png = buffer.getvalue()
    frame = {"frame_id": "f-new", "format": "png", "width": "8", "height": "6"}
    kept = kept_image("frameflow", frame, FrameData({b"frame_id": b"f-new"}, image=png), {"faces_detected": 1}, 60)
    assert kept is not None
    for command in kept.commands:
        redis_client.execute_command(*command)
    assert redis_client.hget(kept.ref, "image") == png
    picture = read_kept_image(redis_client, "frameflow", kept.ref, "f-new")
    assert picture is not None and picture.size == (8, 6)

    old = snapshot_key("frameflow", "f-old")
    redis_client.hset(old, mapping={"image_data": base64.b64encode(png), "format": "png", "width": 8, "height": 6})
    picture = read_kept_image(redis_client, "frameflow", old, "f-old")
    assert picture is not None and picture.size == (8, 6)


# -- hostile binary fields ---------------------------------------------------------------------------


def test_binary_fields_that_are_not_a_list_of_names_make_a_malformed_entry() -> None:
    from pipeline.errors import MalformedEntry
    from pipeline.streams.wire import decode_entry

    for binary in ("image", [1]):
        envelope = json.loads(old_entry("faces-1", "f-1")["message"])
        envelope["options"]["binary_fields"] = binary
        with pytest.raises(MalformedEntry, match="binary_fields"):
            decode_entry({b"frame_id": b"f-1", b"message": json.dumps(envelope).encode()})


def test_a_text_field_declared_binary_is_refused_at_the_processors_door() -> None:
    from pipeline.errors import UnprocessableFrame
    from pipeline.processes.intake import checked_frame
    from pipeline.streams.wire import decode_entry

    entry = old_entry("faces-1", "f-1", image_data=base64.b64encode(ALL_BYTES).decode())
    envelope = json.loads(entry["message"])
    envelope["options"]["binary_fields"] = ["camera_id"]
    entry["message"] = json.dumps(envelope)
    message = decode_entry({name.encode(): value.encode() for name, value in entry.items()})
    assert message.args[0]["camera_id"] == b"cam-old"
    with pytest.raises(UnprocessableFrame, match="every field but the image must be text"):
        checked_frame(message.args, {}, 1 << 20)
    del envelope["options"]["binary_fields"]  # and an image written as text is refused by name
    entry["message"], entry["image"] = json.dumps(envelope), "text"
    message = decode_entry({name.encode(): value.encode() for name, value in entry.items()})
    with pytest.raises(UnprocessableFrame, match="the image field holds text, not bytes"):
        checked_frame(message.args, {}, 1 << 20)
