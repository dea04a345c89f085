"""How a Dramatiq message becomes a stream entry and back.

An entry is a flat, readable record: the field ``message`` holds Dramatiq's
envelope as JSON (queue, actor, args, kwargs, options, id, timestamp). No
pickle, ever: only JSON goes on the wire, and every entry read back is
validated before it reaches an actor; what fails becomes a dead letter with
the reason carried by :class:`~pipeline.errors.MalformedEntry`.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from dramatiq import Message

from .errors import MalformedEntry
from .frames import FRAME_OPTION
from .keys import ENVELOPE_FIELD

Fields = dict[str, bytes]

_ENVELOPE_KEY = ENVELOPE_FIELD.encode()
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "queue_name": str,
    "actor_name": str,
    "args": list,
    "kwargs": dict,
    "options": dict,
    "message_id": str,
    "message_timestamp": int,
}


def dumps(value: Any) -> bytes:
    """JSON-encode ``value`` (orjson, with the stdlib as fallback for big ints)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as error:
        try:
            return json.dumps(value, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            raise TypeError(f"message is not JSON-serialisable: {error}") from None


def encode_envelope(message: Message) -> bytes:
    return dumps(message.asdict())


def encode_message(message: Message) -> Fields:
    """The stream entry fields for ``message``.

    A frame message (option ``frame``) carries its frame fields as the entry's
    own fields, readable by anyone, and an envelope without arguments.
    """
    if message.options.get(FRAME_OPTION) and message.args and isinstance(message.args[0], dict):
        fields: Fields = {name: str(value).encode() for name, value in message.args[0].items()}
        fields[ENVELOPE_FIELD] = encode_envelope(message.copy(args=()))
        return fields
    return {ENVELOPE_FIELD: encode_envelope(message)}


def decode_envelope(raw: bytes) -> Message:
    """Validate a JSON envelope and build the message it describes."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedEntry(f"the 'message' field is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise MalformedEntry(f"the 'message' field is JSON {type(data).__name__}, not an object")
    for name, kind in _REQUIRED.items():
        if name not in data:
            raise MalformedEntry(f"the message envelope has no {name!r}")
        value = data[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise MalformedEntry(f"the message envelope's {name!r} is {type(value).__name__}, expected {kind.__name__}")
    return Message(
        queue_name=data["queue_name"],
        actor_name=data["actor_name"],
        args=tuple(data["args"]),
        kwargs=data["kwargs"],
        options=data["options"],
        message_id=data["message_id"],
        message_timestamp=data["message_timestamp"],
    )


def decode_entry(fields: dict[bytes, bytes]) -> Message:
    """Decode the fields of a stream entry as read by redis-py."""
    raw = fields.get(_ENVELOPE_KEY)
    if raw is None:
        names = ", ".join(sorted(name.decode("utf-8", "replace") for name in fields)) or "none"
        raise MalformedEntry(f"the entry has no 'message' field (fields: {names})")
    message = decode_envelope(raw)
    if message.options.get(FRAME_OPTION):
        frame = {
            name.decode("utf-8", "replace"): value.decode("utf-8", "replace")
            for name, value in fields.items()
            if name != _ENVELOPE_KEY and not name.startswith(b"dead_")
        }
        message = message.copy(args=(frame,))
    return message


def delayed_member(fields: Fields, nonce: str) -> bytes:
    """A sorted-set member that carries an entry until it is due.

    The nonce keeps two identical messages delayed at once from collapsing
    into one member.
    """
    flat: list[str] = []
    for name, value in fields.items():
        flat.append(name)
        flat.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
    return dumps({"n": nonce, "f": flat})
