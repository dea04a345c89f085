"""How a Dramatiq message becomes a stream entry and back.

An entry is a flat, readable record: the field ``message`` holds Dramatiq's
envelope as JSON (queue, actor, args, kwargs, options, id, timestamp). No
pickle, ever: only JSON goes on the wire, and every entry read back is
validated before it reaches an actor; what fails becomes a dead letter with
the reason carried by :class:`~pipeline.errors.MalformedEntry`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson
from dramatiq import Message

from .errors import MalformedEntry
from .frames import FRAME_OPTION
from .keys import ENVELOPE_FIELD

Fields = dict[str, bytes]

_ENVELOPE_KEY = ENVELOPE_FIELD.encode()
_MESSAGE_FIELDS = tuple(field.name for field in dataclasses.fields(Message))
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "queue_name": str,
    "actor_name": str,
    "args": list,
    "kwargs": dict,
    "options": dict,
    "message_id": str,
    "message_timestamp": int,
}
_EXACT_TYPES = tuple(_REQUIRED.values())


def dumps(value: Any) -> bytes:
    """JSON-encode ``value`` (orjson, with the stdlib as fallback for big ints)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as error:
        try:
            return json.dumps(value, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            raise TypeError(f"message is not JSON-serialisable: {error}") from None


def _envelope(message: Message, args: Any) -> dict[str, Any]:
    """``message.asdict()`` (same keys, same order) with ``args`` in place of the message's."""
    envelope = {name: getattr(message, name) for name in _MESSAGE_FIELDS}
    envelope["args"] = args
    return envelope


def encode_envelope(message: Message) -> bytes:
    return dumps(_envelope(message, message.args))


def encode_message(message: Message) -> Fields:
    """The stream entry fields for ``message``.

    A frame message (option ``frame``) carries its frame fields as the entry's
    own fields, readable by anyone, and an envelope without arguments.
    """
    if message.options.get(FRAME_OPTION) and message.args and isinstance(message.args[0], dict):
        fields: Fields = {name: str(value).encode() for name, value in message.args[0].items()}
        fields[ENVELOPE_FIELD] = dumps(_envelope(message, ()))
        return fields
    return {ENVELOPE_FIELD: encode_envelope(message)}


def decode_envelope(raw: bytes) -> Message:
    """Validate a JSON envelope and build the message it describes."""
    data = _envelope_data(raw)
    return _message(data, tuple(data["args"]))


def encode_frame(message: Message, frame: dict[str, Any], **changes: Any) -> Fields:
    """``encode_message(message.copy(args=(frame,), ...))`` without making the copy (the router's
    hot path): ``changes`` replace envelope fields (``queue_name``, ``actor_name``, ``options``,
    the latter whole, not merged as ``copy`` merges it)."""
    fields: Fields = {name: str(value).encode() for name, value in frame.items()}
    envelope = _envelope(message, ())
    envelope.update(changes)
    fields[ENVELOPE_FIELD] = dumps(envelope)
    return fields


def _envelope_data(raw: bytes) -> dict[str, Any]:
    """The envelope's JSON object, every required field there with the right type."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedEntry(f"the 'message' field is not valid JSON ({error})") from None
    if type(data) is dict and tuple(type(data.get(name)) for name in _REQUIRED) == _EXACT_TYPES:
        return data  # the usual case, checked at once (decoded JSON has exactly these types)
    if not isinstance(data, dict):
        raise MalformedEntry(f"the 'message' field is JSON {type(data).__name__}, not an object")
    for name, kind in _REQUIRED.items():
        if name not in data:
            raise MalformedEntry(f"the message envelope has no {name!r}")
        value = data[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise MalformedEntry(f"the message envelope's {name!r} is {type(value).__name__}, expected {kind.__name__}")
    return data


def _message(data: dict[str, Any], args: tuple[Any, ...]) -> Message:
    return Message(
        queue_name=data["queue_name"],
        actor_name=data["actor_name"],
        args=args,
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
    data = _envelope_data(raw)
    if data["options"].get(FRAME_OPTION):
        frame = {
            name.decode("utf-8", "replace"): value.decode("utf-8", "replace")
            for name, value in fields.items()
            if name != _ENVELOPE_KEY and not name.startswith(b"dead_")
        }
        return _message(data, (frame,))
    return _message(data, tuple(data["args"]))


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
