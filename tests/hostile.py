"""Hostile input for :mod:`tests.test_hostile_input` and :mod:`tests.test_processor_guard`: the
processor they attack, well-formed frame entries to spoil, and the hypothesis strategies that spoil them.

Each strategy of processor-queue entries yields a :class:`Hostile`: the fields to XADD and
what the dead letter's reason must name (or the drop it must count instead).
"""

from __future__ import annotations

import base64
import io
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from PIL import Image

from pipeline import ProcessorClient, ProcessorRegistry
from pipeline.domain.images import decode_frame_image
from pipeline.domain.keys import image_key
from pipeline.streams.dead_letters import parse_dead_letter
from pipeline.streams.keys import QueueKeys, queue_keys
from pipeline.streams.wire import dumps
from tests.processes import WorkerProcess

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


def envelope(processor_id: str = PROCESSOR_ID, **changes: object) -> dict:
    """The envelope a router writes for a frame to ``processor_id``, with ``changes``."""
    data = {
        "queue_name": f"frames.ready.{processor_id}",
        "actor_name": f"process_frame.{processor_id}",
        "args": [],
        "kwargs": {},
        "options": {"frame": True, "processor": processor_id},
        "message_id": uuid.uuid4().hex,
        "message_timestamp": 1_700_000_000_000,
    }
    data.update(changes)
    return data


def frame_entry(frame: dict[str, bytes], processor_id: str = PROCESSOR_ID, **changes: object) -> dict[bytes, bytes]:
    """The stream entry of ``frame`` in ``processor_id``'s queue, its envelope changed by ``changes``."""
    fields = {name.encode(): value for name, value in frame.items()}
    return {**fields, b"message": dumps(envelope(processor_id, **changes))}


@dataclass(frozen=True)
class Hostile:
    """An entry to write, and what its dead letter's reason must name (or the drop it must count)."""

    fields: dict[bytes, bytes]
    names: tuple[str, ...]
    dropped: str | None = None


# -- strategies: hostile processor-queue entries ----------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
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
    st.tuples(st.sampled_from(["throws", "retry_when"]), json_values),
    # A due, null or non-numeric eta is run now, as Dramatiq's worker does; a future one is refused.
    st.tuples(
        st.just("eta"),
        st.integers(min_value=10**13)
        | st.floats(min_value=1e14, max_value=1e300),  # from 2286: future however late the test runs
    ),
).map(
    lambda item: Hostile(
        frame_entry(valid_frame(), options={"frame": True, "processor": PROCESSOR_ID, item[0]: item[1]}),
        (f"option '{item[0]}'",),
    )
)
#: Options with which Dramatiq's middleware sends another message (Callbacks, Retries, Pipelines), with
#: values of the types they take: a processor queue refuses them (:mod:`middleware.processor_guard`).
actor_names = st.sampled_from([f"process_frame.{PROCESSOR_ID}", "nobody"]) | st.text(min_size=1, max_size=8)
SENDING_OPTIONS = {
    "on_success": actor_names,
    "on_failure": actor_names,
    "on_retry_exhausted": actor_names,
    "pipe_target": st.builds(envelope) | st.dictionaries(st.text(max_size=5), json_values, max_size=3),
    "pipe_ignore": st.booleans(),
}
#: A frame the processor would process, and one it would fail (which is when ``on_failure`` fires).
sendable_frames = st.sampled_from(["valid", "failing"]).map(
    lambda kind: valid_frame() if kind == "valid" else {**valid_frame(), "image_data": base64.b64encode(JPEG[:20])}
)
sending_option = st.tuples(
    st.sampled_from(sorted(SENDING_OPTIONS)).flatmap(lambda name: st.tuples(st.just(name), SENDING_OPTIONS[name])),
    sendable_frames,
).map(
    lambda item: Hostile(
        frame_entry(item[1], options={"frame": True, "processor": PROCESSOR_ID, item[0][0]: item[0][1]}),
        (f"option '{item[0][0]}' is not allowed on a processor queue",),
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
    no_envelope, garbage_envelope, misshapen_envelope, hostile_option, sending_option, other_queue, unknown_actor,
    not_a_frame, extra_kwargs, missing_field, wrong_value, non_utf8_value, bad_base64, oversized, broken_jpeg,
    missing_image, foreign_image_ref,
)  # fmt: skip


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return True


def dead_letters_of(client: redis.Redis, entry_ids: set[bytes], keys: QueueKeys = KEYS) -> dict[bytes, str]:
    """The reasons of the dead letters of the given queue entries, by entry id."""
    found = {}
    for entry_id, fields in client.xrange(keys.dead):
        letter = parse_dead_letter(entry_id, fields)
        if fields.get(b"dead_entry_id") in entry_ids:
            found[fields[b"dead_entry_id"]] = letter.reason
    return found


def result_frame_ids(client: redis.Redis, stream: str = RESULTS) -> set[str]:
    return {fields.get(b"frame_id", b"").decode() for _, fields in client.xrange(stream)}


def image_expired(client: redis.Redis) -> int:
    return int(client.hget(KEYS.drops, "image_expired") or 0)


def assert_worker_healthy(process: WorkerProcess, client: redis.Redis) -> None:
    assert process.alive(), process.log_tail()
    log = process.log_path.read_text(errors="replace")
    assert "Exception in thread" not in log, process.log_tail(80)  # a worker thread died
    info = ProcessorRegistry(client).get(PROCESSOR_ID)
    assert info is not None and info.breaker == "closed", info  # bad frames are not the processor's fault


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
