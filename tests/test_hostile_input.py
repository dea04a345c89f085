"""Hostile input: whatever lands in a processor queue or a result stream, nothing crashes and nothing vanishes.

Property-based (hypothesis; the strategies are in :mod:`tests.hostile`). Entries are
written with XADD straight into the queue of a real processor running as its own process
(``frameflow worker``): each ends as a dead letter whose reason names what was wrong (or,
for a claim-checked image that is gone, as a counted ``image_expired`` drop), the worker
stays up and still processes a valid frame written after them, and nothing is left
pending. Result streams are read past hostile entries with a counted, reasoned rejection.
``FrameProducer.publish`` answers anything with a routing decision or ``FrameRejected``,
and what it accepts a processor accepts.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from dramatiq import Message
from hypothesis import event, given, settings
from hypothesis import strategies as st

from middleware.routing import RoutingDecision
from pipeline import FrameProducer, ProcessorRegistry
from pipeline.domain.frames import DEFAULT_MAX_FRAME_BYTES, FrameRejected, check_frame_fields
from pipeline.domain.results import ResultReader
from pipeline.errors import UnprocessableFrame
from pipeline.streams.keys import queue_keys
from pipeline.streams.wire import decode_entry, encode_message
from tests.cli_harness import FRAMEFLOW, frameflow
from tests.hostile import (
    FAST,
    GENERIC,
    JPEG,
    KEYS,
    PROCESSOR_ID,
    QUEUE,
    RESULTS,
    WORKER_MAX_FRAME_BYTES,
    Hostile,
    arguments,
    assert_worker_healthy,
    dead_letters_of,
    frame_entry,
    hostile_entries,
    hostile_results,
    image_expired,
    json_values,
    result_entry,
    result_frame_ids,
    valid_frame,
)
from tests.polling import wait_until
from tests.processes import WorkerProcess, pending_count, worker_env
from tests.processor_harness import register_fake


# -- a processor of its own, as a real process -------------------------------------------------
@pytest.fixture
def hostile_worker(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[WorkerProcess]:
    env = worker_env(redis_url, lease_ms=1000, max_deliveries=3, FRAMEFLOW_MAX_FRAME_BYTES=str(WORKER_MAX_FRAME_BYTES))
    command = [*FRAMEFLOW, "--redis-url", redis_url, "worker", "tests.hostile:DecodingProcessor"]
    process = WorkerProcess(command, env, tmp_path / "worker.log")
    registry = ProcessorRegistry(redis_client)
    try:
        wait_until(
            lambda: registry.get(PROCESSOR_ID) is not None or not process.alive(),
            20,
            lambda: f"the processor to register:\n{process.log_tail()}",
        )
        assert process.alive(), process.log_tail()
        yield process
    finally:
        process.stop()


@settings(max_examples=60, **FAST)
@given(entries=st.lists(hostile_entries, min_size=1, max_size=4))
def test_hostile_queue_entries_end_as_dead_letters_with_their_reason(
    hostile_worker: WorkerProcess, redis_client: redis.Redis, entries: list[Hostile]
) -> None:
    expired_before = image_expired(redis_client)
    ids = [redis_client.xadd(KEYS.stream, entry.fields) for entry in entries]
    valid_id = uuid.uuid4().hex
    redis_client.xadd(KEYS.stream, frame_entry(valid_frame(valid_id)))
    to_dead = {entry_id for entry_id, entry in zip(ids, entries, strict=True) if entry.dropped is None}
    dropped = sum(1 for entry in entries if entry.dropped)

    def settled() -> bool:
        return (
            valid_id in result_frame_ids(redis_client)
            and len(dead_letters_of(redis_client, to_dead)) == len(to_dead)
            and image_expired(redis_client) - expired_before == dropped
            and redis_client.xlen(KEYS.stream) == 0
            and pending_count(redis_client, KEYS.stream) == 0
        )

    wait_until(
        settled,
        15,
        lambda: (
            f"every entry to end: dead {dead_letters_of(redis_client, to_dead)} of {entries}\n"
            f"{hostile_worker.log_tail()}"
        ),
    )
    reasons = dead_letters_of(redis_client, to_dead)
    for entry_id, entry in zip(ids, entries, strict=True):
        if entry.dropped:
            continue
        reason = reasons[entry_id]
        assert any(name.lower() in reason.lower() for name in entry.names), (reason, entry)
        assert not reason.startswith(GENERIC), (reason, entry)
    assert_worker_healthy(hostile_worker, redis_client)


def test_the_dlq_listing_shows_hostile_entries_with_their_reasons(
    hostile_worker: WorkerProcess, redis_client: redis.Redis, redis_url: str
) -> None:
    hostile = [
        {b"\xff[/bold]": b"\xfe\x00", b"[red]x": b"\x1b[2Jcleared"},
        {b"message": b"\xc3\x28 not json [/]"},
        frame_entry({**valid_frame("latin"), "camera_id": b"caf\xe9"}),
    ]
    ids = {redis_client.xadd(KEYS.stream, fields) for fields in hostile}
    wait_until(lambda: len(dead_letters_of(redis_client, ids)) == 3, 10, "the dead letters")
    redis_client.xadd(KEYS.dead, {b"dead_reason": b"forged", b"dead_at_ms": b"soon"})  # the dead letters, by hand

    listing = frameflow(redis_url, "dlq", "list", QUEUE)
    assert listing.exit_code == 0, listing.output
    assert "no 'message' field (fields: [red]x" in listing.output  # as written, not taken for markup
    assert "the 'message' field is not valid JSON" in listing.output
    assert "not UTF-8" in listing.output
    assert "\x1b" not in listing.output
    as_json = json.loads(frameflow(redis_url, "dlq", "list", QUEUE, "--json").output)
    assert len(as_json) == 4 and all(letter["reason"] for letter in as_json)
    for letter_id, _ in redis_client.xrange(KEYS.dead):
        shown = frameflow(redis_url, "dlq", "show", QUEUE, letter_id.decode())
        assert shown.exit_code == 0 and "reason" in shown.output, shown.output
    assert_worker_healthy(hostile_worker, redis_client)


@settings(max_examples=100, **FAST)
@given(args=st.lists(json_values | st.integers(min_value=2**64), max_size=3))
def test_any_json_message_survives_the_wire(args: list) -> None:
    """Integers beyond 64 bits are written by the stdlib fallback; they must read back too."""
    message = Message(queue_name="default", actor_name="a", args=tuple(args), kwargs={}, options={"retries": 0})
    fields = {name.encode(): value for name, value in encode_message(message).items()}
    assert decode_entry(fields).args == tuple(args)


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_a_number_json_cannot_hold_is_refused_at_send_not_delivered_as_none(number: float) -> None:
    message = Message(queue_name="default", actor_name="a", args=({"score": [1.0, number]},), kwargs={}, options={})
    with pytest.raises(TypeError, match="JSON has no NaN or Infinity"):
        encode_message(message)


# -- result streams ---------------------------------------------------------------------------
@settings(max_examples=40, **FAST)
@given(plan=st.lists(st.one_of(st.none(), hostile_results), min_size=1, max_size=8))
def test_result_reader_skips_hostile_entries_with_a_counted_reason(
    redis_client: redis.Redis, plan: list[tuple[dict[bytes, bytes], str] | None]
) -> None:
    stream = f"results:{uuid.uuid4().hex}"
    expected = []
    for step in plan:
        if step is None:
            expected.append(uuid.uuid4().hex)
            redis_client.xadd(stream, result_entry(expected[-1]))
        else:
            redis_client.xadd(stream, step[0])
    reader = ResultReader(redis_client, stream, "consumers", block_ms=10, follow=False, max_entry_bytes=4096)
    read = [fields["frame_id"] for fields in reader]
    assert read == expected
    hostile = [step[1] for step in plan if step is not None]
    assert sum(reader.rejected.values()) == len(hostile)
    for reason in hostile:
        assert any(reason in kind for kind in reader.rejected), (reason, reader.rejected)
    assert redis_client.xpending(stream, "consumers")["pending"] == 0


def test_results_command_skips_hostile_entries_and_says_how_many(redis_client: redis.Redis, redis_url: str) -> None:
    redis_client.xadd(RESULTS, {b"\xff": b"\xfe", b"[/]": b"x"})
    redis_client.xadd(RESULTS, {b"frame_id": b"f", b"note": b"caf\xe9"})
    redis_client.xadd(RESULTS, result_entry("good-1"))
    result = frameflow(redis_url, "results", RESULTS)
    assert result.exit_code == 0, result.output
    assert "frame=good-1" in result.output
    assert "skipped 2 malformed result entries" in result.output, result.output
    lines = frameflow(redis_url, "results", RESULTS, "--json").stdout.splitlines()
    assert [json.loads(line)["frame_id"] for line in lines] == ["good-1"]


# -- the producer API -------------------------------------------------------------------------
@pytest.fixture
def producer(redis_url: str, redis_client: redis.Redis) -> Iterator[FrameProducer]:
    register_fake(redis_client, "faces-1", ("faces",))
    producer = FrameProducer(redis_url, max_frame_bytes=64)
    yield producer
    producer.close()


@settings(max_examples=250, **FAST)
@given(kwargs=arguments())
def test_publish_answers_anything_with_a_decision_or_frame_rejected(
    producer: FrameProducer, redis_client: redis.Redis, kwargs: dict
) -> None:
    before = redis_client.xlen(queue_keys("frameflow", "frames.ready.faces-1").stream)
    try:
        decision = producer.publish(**kwargs)
    except FrameRejected as error:
        assert str(error) and "\n" not in str(error)
        assert redis_client.xlen(queue_keys("frameflow", "frames.ready.faces-1").stream) == before
        event(f"rejected: {str(error).split()[0]} {str(error).split()[1]}")
        return
    except TypeError as error:  # a required argument missing: Python's own message, as for any call
        assert "required keyword-only argument" in str(error)
        return
    event("published")
    assert isinstance(decision, RoutingDecision)
    capabilities = kwargs["capabilities"]
    needed = {capabilities} if isinstance(capabilities, str) else set(capabilities)
    if "faces" not in needed:
        assert decision.targets == () and set(decision.parked) == needed, decision  # parked with its reason
        return
    assert decision.targets == ("faces-1",)
    _, fields = redis_client.xrevrange(queue_keys("frameflow", "frames.ready.faces-1").stream, count=1)[0]
    frame = decode_entry(fields).args[0]
    if "image_ref" not in frame:  # else claim-checked, for a large frame parked for another capability as well
        assert frame["image"] == bytes(kwargs["image"])  # raw, byte for byte
    check_frame_fields(frame, 64)  # what a producer accepts, a processor accepts


@settings(max_examples=30, **FAST)
@given(limit=st.integers(1, 4096), from_env=st.booleans())
def test_the_frame_size_cap_is_configurable_and_exact(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, limit: int, from_env: bool
) -> None:
    register_fake(redis_client, "faces-1", ("faces",))
    monkeypatch.setenv("FRAMEFLOW_MAX_FRAME_BYTES", str(limit if from_env else 10 * limit))
    producer = FrameProducer(redis_url, max_frame_bytes=None if from_env else limit)
    try:
        frame = {"camera_id": "cam-1", "capabilities": ["faces"], "width": 4, "height": 4}
        assert producer.publish(image=b"i" * limit, **frame).targets == ("faces-1",)
        with pytest.raises(FrameRejected, match=f"image of {limit + 1} bytes exceeds the limit of {limit} bytes"):
            producer.publish(image=b"i" * (limit + 1), **frame)
    finally:
        producer.close()


@pytest.mark.parametrize("value", ["0", "-5", "lots", "1.5"])
def test_a_bad_frame_size_cap_is_a_clear_error(redis_url: str, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FRAMEFLOW_MAX_FRAME_BYTES", value)
    with pytest.raises(ValueError, match="FRAMEFLOW_MAX_FRAME_BYTES"):
        FrameProducer(redis_url)
    with pytest.raises(ValueError, match="max_frame_bytes"):
        FrameProducer(redis_url, max_frame_bytes=0)


def test_the_default_cap_is_sixteen_mebibytes(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAMEFLOW_MAX_FRAME_BYTES", raising=False)
    producer = FrameProducer(redis_url)
    try:
        assert producer.max_frame_bytes == DEFAULT_MAX_FRAME_BYTES == 16 * 1024 * 1024
    finally:
        producer.close()


def test_the_processor_side_cap_is_exact_too() -> None:
    frame = {name: value.decode() for name, value in valid_frame("f-1").items()}
    check_frame_fields(frame, len(JPEG))
    with pytest.raises(UnprocessableFrame, match=f"exceeds the limit of {len(JPEG) - 1} bytes"):
        check_frame_fields(frame, len(JPEG) - 1)
