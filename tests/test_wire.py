"""What goes on the wire, and what is refused when read back."""

from __future__ import annotations

import dataclasses
import time

import orjson
import pytest
from dramatiq import Message

from pipeline import MalformedEntry
from pipeline.streams.wire import FLAT_FIELDS_OPTION, decode_entry, encode_message, entry_items


def make_message(**options) -> Message:
    return Message(queue_name="default", actor_name="add", args=(1, 2), kwargs={"k": "v"}, options=options)


def test_a_message_survives_the_round_trip() -> None:
    message = make_message(retries=2)
    fields = encode_message(message)
    assert decode_entry({name.encode(): value for name, value in fields.items()}) == message


def test_the_envelope_is_plain_json() -> None:
    assert encode_message(make_message())["message"].startswith(b'{"queue_name":"default"')


def test_the_envelope_holds_dramatiqs_message_fields_in_their_order() -> None:
    message = make_message(retries=2)
    envelope = orjson.loads(encode_message(message)["message"])
    assert list(envelope) == [field.name for field in dataclasses.fields(Message)]
    assert envelope == orjson.loads(orjson.dumps(message.asdict()))


def test_a_sends_items_are_the_encoded_fields_alternating_as_xadd_takes_them() -> None:
    flat = Message(queue_name="q", actor_name="a", args=({"camera_id": "c", "image": b"\xff"},), kwargs={}, options={})
    flat.options[FLAT_FIELDS_OPTION] = True
    for message in (make_message(retries=2), flat):
        fields = encode_message(message)
        assert entry_items(message) == [item for pair in fields.items() for item in pair]
    assert entry_items(flat)[:4] == ["camera_id", b"c", "image", b"\xff"]


def test_unserialisable_arguments_are_a_clear_error() -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        encode_message(Message(queue_name="q", actor_name="a", args=(object(),), kwargs={}, options={}))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"other": b"x"}, "the entry has no 'message' field (fields: other)"),
        ({b"message": b"\xff\xfe"}, "the 'message' field is not valid JSON"),
        ({b"message": b"[1, 2]"}, "the 'message' field is JSON list, not an object"),
        ({b"message": b'{"queue_name": "q"}'}, "the message envelope has no 'actor_name'"),
        (
            {
                b"message": b'{"queue_name":"q","actor_name":"a","args":"nope","kwargs":{},"options":{},'
                b'"message_id":"i","message_timestamp":1}'
            },
            "the message envelope's 'args' is str, expected list",
        ),
        (
            {
                b"message": b'{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":{},'
                b'"message_id":"i","message_timestamp":true}'
            },
            "the message envelope's 'message_timestamp' is bool, expected int",
        ),
    ],
)
def test_malformed_entries_are_refused_with_a_reason(fields: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(MalformedEntry) as caught:
        decode_entry(fields)
    assert str(caught.value).startswith(reason)


@pytest.mark.parametrize("eta", [None, "soon", 0, "now-ish"])
def test_an_eta_dramatiqs_worker_runs_at_once_is_accepted(eta: object) -> None:
    message = Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={"eta": eta})
    fields = {name.encode(): value for name, value in encode_message(message).items()}
    assert decode_entry(fields).options["eta"] == eta


def test_a_future_eta_is_refused_it_would_park_the_message_in_a_worker() -> None:
    far = int(time.time() * 1000) + 3_600_000
    message = Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={"eta": far})
    fields = {name.encode(): value for name, value in encode_message(message).items()}
    with pytest.raises(MalformedEntry, match="option 'eta' is in the future"):
        decode_entry(fields)


def test_an_option_of_the_wrong_type_is_refused_after_good_envelopes_of_the_same_names() -> None:
    good = {name.encode(): value for name, value in encode_message(make_message(retries=1, max_retries=3)).items()}
    for _ in range(3):  # the shape is remembered as good
        assert decode_entry(good).options == {"retries": 1, "max_retries": 3}
    bad = {name.encode(): value for name, value in encode_message(make_message(retries="1", max_retries=3)).items()}
    with pytest.raises(MalformedEntry, match="option 'retries' is str, expected int"):
        decode_entry(bad)


def test_a_future_eta_is_refused_after_a_due_eta_of_the_same_shape() -> None:
    def entry(eta: int) -> dict[bytes, bytes]:
        message = Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={"eta": eta})
        return {name.encode(): value for name, value in encode_message(message).items()}

    due = int(time.time() * 1000)
    assert decode_entry(entry(due)).options["eta"] == due
    with pytest.raises(MalformedEntry, match="option 'eta' is in the future"):
        decode_entry(entry(due + 3_600_000))


def test_a_flat_entrys_fields_decode_the_same_every_time_and_bad_names_stay_refused() -> None:
    frame = {"frame_id": "f-1", "camera_id": "cam", "image": b"\xff\x00raw"}
    message = Message(queue_name="q", actor_name="a", args=(frame,), kwargs={}, options={FLAT_FIELDS_OPTION: True})
    fields = {name.encode(): value for name, value in encode_message(message).items()}
    fields[b"dead_reason"] = b"a note the dead-letter path wrote"
    for _ in range(3):  # field names are remembered after the first
        assert decode_entry(fields).args == (frame,)
    with pytest.raises(MalformedEntry, match="UTF-8"):
        decode_entry({**fields, b"\xffname": b"value"})
    with pytest.raises(MalformedEntry, match="UTF-8"):
        decode_entry({**fields, b"camera_id": b"\xff"})
