"""Hostile input: whatever lands in a processor queue or a result stream, nothing crashes and nothing vanishes.

Property-based (hypothesis). Entries are written with XADD straight into the queue of a
real processor running as its own process (``frameflow worker``): each ends as a dead
letter whose reason names what was wrong (or, for a claim-checked image that is gone, as
a counted ``image_expired`` drop), the worker stays up and still processes a valid frame
written after them, and nothing is left pending. Result streams are read past hostile
entries with a counted, reasoned rejection. ``FrameProducer.publish`` answers anything
with a routing decision or ``FrameRejected``, and what it accepts a processor accepts.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from dramatiq import Message
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from middleware.routing import RoutingDecision
from pipeline import FrameProducer, ProcessorClient, ProcessorRegistry
from pipeline.dead_letters import parse_dead_letter
from pipeline.errors import UnprocessableFrame
from pipeline.frames import DEFAULT_MAX_FRAME_BYTES, FrameRejected, check_frame_fields
from pipeline.images import decode_frame_image
from pipeline.keys import image_key, queue_keys
from pipeline.results import ResultReader
from pipeline.wire import decode_entry, dumps, encode_message
from tests.cli_harness import FRAMEFLOW, frameflow
from tests.polling import wait_until
from tests.processes import WorkerProcess, pending_count, worker_env
from tests.processor_harness import register_fake

PROCESSOR_ID = "hostile-1"
QUEUE = f"frames.ready.{PROCESSOR_ID}"
KEYS = queue_keys("frameflow", QUEUE)
RESULTS = "hostile:results"
#: The processor's frame size cap (``FRAMEFLOW_MAX_FRAME_BYTES``), small so oversized images stay cheap.
WORKER_MAX_FRAME_BYTES = 16 * 1024
#: Exception types whose name alone says nothing about what was wrong with the entry.
GENERIC = ("Exception", "TypeError", "KeyError", "ValueError", "AttributeError", "IndexError", "RuntimeError")
FAST = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}


class DecodingProcessor(ProcessorClient):
    """Decodes each frame's image (as the model processors do) and reports its size."""

    max_retries = 2

    def __init__(self) -> None:
        super().__init__(
            processor_id=PROCESSOR_ID,
            capabilities=["hostile"],
            orchestrator_url="unused",
            capacity=4,
            result_stream=RESULTS,
            health_check_interval=0.5,
        )

    def process_frame(self, frame_data: dict[bytes, bytes]) -> dict:
        picture = decode_frame_image(frame_data)
        return {"size": f"{picture.width}x{picture.height}"}


def jpeg(width: int = 16, height: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


JPEG = jpeg()


def valid_frame(frame_id: str | None = None) -> dict[str, bytes]:
    return {
        "frame_id": (frame_id or uuid.uuid4().hex).encode(),
        "camera_id": b"cam-1",
        "timestamp": datetime.now(UTC).isoformat().encode(),
        "image_data": base64.b64encode(JPEG),
        "width": b"16",
        "height": b"12",
        "format": b"jpeg",
        "metadata": b"{}",
        "trace_context": b"{}",
    }


def envelope(**changes: object) -> dict:
    data = {
        "queue_name": QUEUE,
        "actor_name": f"process_frame.{PROCESSOR_ID}",
        "args": [],
        "kwargs": {},
        "options": {"frame": True, "processor": PROCESSOR_ID},
        "message_id": uuid.uuid4().hex,
        "message_timestamp": 1_700_000_000_000,
    }
    data.update(changes)
    return data


def frame_entry(frame: dict[str, bytes], **changes: object) -> dict[bytes, bytes]:
    return {**{name.encode(): value for name, value in frame.items()}, b"message": dumps(envelope(**changes))}


@dataclass(frozen=True)
class Hostile:
    """An entry to write, and what its dead letter's reason must name (or the drop it must count)."""

    fields: dict[bytes, bytes]
    names: tuple[str, ...]
    dropped: str | None = None


# -- strategies: hostile processor-queue entries ----------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
non_utf8 = st.binary(min_size=1, max_size=16).filter(lambda data: not _is_utf8(data))
field_names = st.binary(min_size=1, max_size=12).filter(
    lambda name: name != b"message" and not name.startswith(b"dead_")
)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


no_envelope = st.dictionaries(field_names, st.binary(max_size=32), min_size=1, max_size=4).map(
    lambda fields: Hostile(fields, ("no 'message' field",))
)
garbage_envelope = st.binary(max_size=64).map(lambda raw: Hostile({b"message": raw}, ("'message' field", "envelope")))
misshapen_envelope = st.builds(
    lambda name, value, drop: Hostile(
        {b"message": dumps({k: v for k, v in {**envelope(), name: value}.items() if not (drop and k == name)})},
        (f"'{name}'",),
    ),
    st.sampled_from(["queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp"]),
    json_values.filter(lambda value: not isinstance(value, list | dict | str | int) or isinstance(value, bool)),
    st.booleans(),
)
#: Options Dramatiq's middleware or frameflow read: a wrong type must never reach them.
TYPED_OPTIONS = ("retries", "max_retries", "min_backoff", "max_backoff", "time_limit", "max_age", "captured_at_ms")
hostile_option = st.one_of(
    st.tuples(st.sampled_from(TYPED_OPTIONS), st.text(max_size=5) | st.lists(st.integers(), max_size=2)),
    st.tuples(st.sampled_from(["eta", "throws", "retry_when"]), json_values),
).map(
    lambda item: Hostile(
        frame_entry(valid_frame(), options={"frame": True, "processor": PROCESSOR_ID, item[0]: item[1]}),
        (f"option '{item[0]}'",),
    )
)
other_queue = st.sampled_from(["default", "frames.ready.someone-else"]).map(
    lambda queue: Hostile(frame_entry(valid_frame(), queue_name=queue), (f"'{queue}'",))
)
unknown_actor = st.builds(lambda: Hostile(frame_entry(valid_frame(), actor_name="nobody"), ("ActorNotFound: nobody",)))
not_a_frame = st.tuples(st.lists(json_values, max_size=3), st.dictionaries(st.text(max_size=5), json_values)).map(
    lambda call: Hostile(
        {b"message": dumps(envelope(args=call[0], kwargs=call[1], options={"processor": PROCESSOR_ID}))},
        ("frame",),
    )
)
extra_kwargs = st.dictionaries(st.text(min_size=1, max_size=5), json_values, min_size=1, max_size=2).map(
    lambda kwargs: Hostile(frame_entry(valid_frame(), kwargs=kwargs), ("keyword",))
)
REQUIRED = ("frame_id", "camera_id", "timestamp", "image_data", "width", "height", "format")
missing_field = st.sampled_from(REQUIRED).map(
    lambda name: Hostile(frame_entry({k: v for k, v in valid_frame().items() if k != name}), (name,))
)
BAD_VALUES = {
    "width": st.sampled_from([b"", b"wide", b"0", b"-3", b"65536", b"1.5", b"99999999999999999999"]),
    "height": st.sampled_from([b"", b"tall", b"0", b"-1", b"70000"]),
    "format": st.sampled_from([b"", b"gif", b"JPEG ", b"tiff"]),
    "timestamp": st.sampled_from([b"", b"yesterday", b"2024-13-01T00:00:00", b"12:00"]),
    "camera_id": st.sampled_from([b"", b"front door!", b"cam\n", b"x" * 200]),
    "metadata": st.sampled_from([b"not json", b"[1, 2]", b"{", b"42"]),
    "trace_context": st.sampled_from([b"not json", b'"traceparent"', b"[]"]),
    "frame_id": st.sampled_from([b"", b"x" * 300]),
}
wrong_value = st.sampled_from(sorted(BAD_VALUES)).flatmap(
    lambda name: BAD_VALUES[name].map(lambda value: Hostile(frame_entry({**valid_frame(), name: value}), (name,)))
)
non_utf8_value = st.tuples(st.sampled_from(sorted(valid_frame())), non_utf8).map(
    lambda item: Hostile(frame_entry({**valid_frame(), item[0]: item[1]}), ("UTF-8",))
)
bad_base64 = (
    st.text(min_size=1, max_size=40)
    .filter(lambda text: not _is_base64(text))
    .map(lambda text: Hostile(frame_entry({**valid_frame(), "image_data": text.encode()}), ("base64",)))
)
oversized = st.integers(1, 2048).map(
    lambda extra: Hostile(
        frame_entry(
            {**valid_frame(), "image_data": base64.b64encode(b"\xff\xd8" * ((WORKER_MAX_FRAME_BYTES + extra) // 2 + 1))}
        ),
        ("exceeds",),
    )
)
broken_jpeg = st.one_of(
    st.integers(2, len(JPEG) - 3).map(lambda cut: JPEG[:cut]),
    st.binary(min_size=1, max_size=200).map(lambda junk: JPEG[:20] + junk),
).map(lambda data: Hostile(frame_entry({**valid_frame(), "image_data": base64.b64encode(data)}), ("jpeg",)))


def claim_checked(frame_id: str, ref: bytes) -> dict[str, bytes]:
    return {**{k: v for k, v in valid_frame(frame_id).items() if k != "image_data"}, "image_ref": ref}


missing_image = st.uuids().map(
    lambda uid: Hostile(
        frame_entry(claim_checked(uid.hex, image_key("frameflow", uid.hex).encode())), (), dropped="image_expired"
    )
)
foreign_image_ref = st.sampled_from([b"frameflow:processor:hostile-1", b"secrets", KEYS.stream.encode()]).map(
    lambda key: Hostile(frame_entry(claim_checked(uuid.uuid4().hex, key)), ("image_ref",))
)

hostile_entries = st.one_of(
    no_envelope, garbage_envelope, misshapen_envelope, hostile_option, other_queue, unknown_actor, not_a_frame,
    extra_kwargs, missing_field, wrong_value, non_utf8_value, bad_base64, oversized, broken_jpeg, missing_image,
    foreign_image_ref,
)  # fmt: skip


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return True


# -- a processor of its own, as a real process -------------------------------------------------
@pytest.fixture
def hostile_worker(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Iterator[WorkerProcess]:
    env = worker_env(redis_url, lease_ms=1000, max_deliveries=3, FRAMEFLOW_MAX_FRAME_BYTES=str(WORKER_MAX_FRAME_BYTES))
    command = [*FRAMEFLOW, "--redis-url", redis_url, "worker", f"{__name__}:DecodingProcessor"]
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


def dead_letters_of(client: redis.Redis, entry_ids: set[bytes]) -> dict[bytes, str]:
    """The reasons of the dead letters of the given queue entries, by entry id."""
    found = {}
    for entry_id, fields in client.xrange(KEYS.dead):
        letter = parse_dead_letter(entry_id, fields)
        if fields.get(b"dead_entry_id") in entry_ids:
            found[fields[b"dead_entry_id"]] = letter.reason
    return found


def result_frame_ids(client: redis.Redis) -> set[str]:
    return {fields.get(b"frame_id", b"").decode() for _, fields in client.xrange(RESULTS)}


def image_expired(client: redis.Redis) -> int:
    return int(client.hget(KEYS.drops, "image_expired") or 0)


def assert_worker_healthy(process: WorkerProcess, client: redis.Redis) -> None:
    assert process.alive(), process.log_tail()
    log = process.log_path.read_text(errors="replace")
    assert "Exception in thread" not in log, process.log_tail(80)  # a worker thread died
    info = ProcessorRegistry(client).get(PROCESSOR_ID)
    assert info is not None and info.breaker == "closed", info  # bad frames are not the processor's fault


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


# -- result streams ---------------------------------------------------------------------------
def result_entry(frame_id: str) -> dict[bytes, bytes]:
    return {b"frame_id": frame_id.encode(), b"camera_id": b"cam-1", b"processor_id": b"p-1", b"faces": b"[]"}


hostile_results = st.one_of(
    st.dictionaries(
        field_names.filter(lambda name: name != b"frame_id"), st.binary(max_size=16), min_size=1, max_size=3
    ).map(lambda fields: (fields, "no frame_id")),
    st.just({b"frame_id": b""}).map(lambda fields: (fields, "no frame_id")),
    st.tuples(field_names, non_utf8).map(lambda item: ({b"frame_id": b"f", item[0]: item[1]}, "UTF-8")),
    st.tuples(non_utf8, st.text(max_size=4)).map(
        lambda item: ({b"frame_id": b"f", item[0]: item[1].encode()}, "UTF-8")
    ),
    st.integers(1, 64).map(lambda extra: ({b"frame_id": b"f", b"blob": b"x" * (4096 + extra)}, "bytes")),
)


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
anything = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10), st.binary(max_size=10),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.datetimes(), st.datetimes(timezones=st.just(UTC)),
)  # fmt: skip
#: For each argument of ``publish``: values it should take, and values it should refuse or survive.
PUBLISH_ARGUMENTS = {
    "camera_id": (st.sampled_from(["cam-1", "front.door:2"]), st.text(max_size=140) | anything),
    "image": (st.binary(min_size=1, max_size=64), st.binary(min_size=60, max_size=80) | anything),
    "capabilities": (st.just(["faces"]), st.lists(st.text(max_size=5), max_size=2) | anything),
    "width": (st.integers(1, 65535), st.integers(-2, 70000) | anything),
    "height": (st.integers(1, 65535), st.integers(-2, 70000) | anything),
    "format": (st.sampled_from(["jpeg", "png", "raw"]), st.sampled_from(["gif", "JPEG", ""]) | anything),
    "metadata": (
        st.dictionaries(st.text(max_size=3), json_values, max_size=2),
        st.dictionaries(st.text(max_size=3), st.floats()) | anything,
    ),
    "timestamp": (
        st.datetimes(timezones=st.just(UTC)) | st.floats(0, 4e9),
        st.floats() | st.integers() | st.text(max_size=25) | st.datetimes(),
    ),
    "max_age_ms": (st.integers(1, 10**6), st.integers(-5, 10**6) | anything),
}
REQUIRED_ARGUMENTS = ("camera_id", "image", "capabilities", "width", "height")
MISSING = object()


@st.composite
def arguments(draw: st.DrawFn) -> dict:
    """publish()'s keyword arguments: valid ones, with a few of them (maybe none) hostile or left out."""
    hostile = draw(st.sets(st.sampled_from(sorted(PUBLISH_ARGUMENTS)), max_size=3))
    kwargs = {}
    for name, (valid, bad) in PUBLISH_ARGUMENTS.items():
        if name not in hostile:
            if name in REQUIRED_ARGUMENTS or draw(st.booleans()):
                kwargs[name] = draw(valid)
            continue
        value = draw(bad | st.just(MISSING))
        if value is not MISSING:
            kwargs[name] = value
    return kwargs


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
    if "image_data" in frame:  # else claim-checked, for a frame parked for another capability as well
        assert base64.b64decode(frame["image_data"]) == bytes(kwargs["image"])
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
