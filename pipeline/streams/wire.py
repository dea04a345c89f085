"""How a Dramatiq message becomes a stream entry and back.

An entry is a flat, readable record: the field ``message`` holds Dramatiq's
envelope as JSON (queue, actor, args, kwargs, options, id, timestamp). No
pickle, ever: only JSON goes on the wire, and every entry read back is
validated before it reaches an actor; what fails becomes a dead letter with
the reason carried by :class:`~pipeline.errors.MalformedEntry`.

A flat message (:data:`FLAT_FIELDS_OPTION`) may carry ``bytes`` values beside its text: they
go on the wire as they are (a camera image: no base64, no JSON escaping), and the envelope
names them (:data:`BINARY_FIELDS_OPTION`) so that reading the entry gives them back as bytes
while every other field must be UTF-8 text.
"""

from __future__ import annotations

import json
import math
import operator
import time
from typing import Any

import orjson
from dramatiq import Message

from pipeline.errors import MalformedEntry

from .keys import ENVELOPE_FIELD

Fields = dict[str, bytes]

#: A message with this option true carries its first argument, a dict of text fields, as the
#: entry's own fields, readable by anyone (``redis-cli XRANGE``), and an envelope without
#: arguments. The name is the wire's, ``frame``: frames are what travel this way.
FLAT_FIELDS_OPTION = "frame"

#: The option, written by the wire itself, that lists a flat message's fields whose values are
#: bytes (kept as they are) rather than text; absent when there are none (and in older entries).
BINARY_FIELDS_OPTION = "binary_fields"

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
_EXACT_TYPES = tuple(_REQUIRED.values())
_REQUIRED_VALUES = operator.itemgetter(*_REQUIRED)
_NUMBER = (int, float)

#: 19 digits in a row: maybe an integer orjson cannot read exactly (see :func:`_loads`). Looked for in
#: the envelope with every digit translated to ``9`` (:data:`_DIGITS_AS_NINES`): a C pass and a substring
#: search, a fifth of what ``re.search(rb"\d{19}")`` cost on a frame's envelope (4.4 against 0.9 µs).
_LONG_DIGITS = b"9" * 19
_DIGITS_AS_NINES = bytes.maketrans(b"0123456789", b"9" * 10)

#: Options that Dramatiq's middleware or frameflow compute with, and the types they need. A wrong
#: type fails inside a middleware hook, which Dramatiq only logs: ``retries: "x"`` made Retries fail,
#: so a failed message was acked with neither a retry nor a dead letter. The options that make Dramatiq
#: send other messages (``on_*``, ``pipe_*``) are only type-checked here: a processor queue refuses
#: them outright (:mod:`middleware.processor_guard`), while plain actors may use them.
_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "retries": (int,),
    "max_retries": (int, type(None)),
    "min_backoff": _NUMBER,
    "max_backoff": _NUMBER,
    "time_limit": _NUMBER,
    "max_age": _NUMBER,
    "captured_at_ms": _NUMBER,
    "max_age_ms": _NUMBER,
    "requeue_timestamp": _NUMBER,
    "notify_shutdown": (bool,),
    "pipe_ignore": (bool,),
    "pipe_target": (dict,),
    "on_success": (str,),
    "on_failure": (str,),
    "on_retry_exhausted": (str,),
    "processor": (str,),
    FLAT_FIELDS_OPTION: (bool,),
    BINARY_FIELDS_OPTION: (list,),
}

#: Options no stream entry may carry: this broker never writes them, and a worker trusts them.
#: ``throws`` and ``retry_when`` are used as an exception class and a callable, so any JSON value
#: there raised inside Dramatiq's worker thread and killed it.
_LOCAL_OPTIONS = {
    "throws": "exception classes are the actor's, never the message's",
    "retry_when": "a retry predicate is the actor's, never the message's",
}


#: How far in the future an ``eta`` may be (clocks of two hosts differ) before it is refused.
ETA_TOLERANCE_MS = 1000


def dumps(value: Any) -> bytes:
    """JSON-encode ``value`` (orjson, with the stdlib as fallback for big ints).

    Raises:
      TypeError: ``value`` is not JSON, NaN and infinities included: orjson would write them as
        ``null`` and the actor would receive ``None`` (JSON has no such numbers).
    """
    try:
        encoded = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as error:
        try:
            return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError):
            raise TypeError(f"message is not JSON-serialisable: {error}") from None
    if b"null" in encoded and _holds_non_finite(value):  # only then is the walk worth its cost
        raise TypeError("message is not JSON-serialisable: JSON has no NaN or Infinity")
    return encoded


def _holds_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_holds_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_non_finite(item) for item in value)
    return False


def _envelope(message: Message, args: Any) -> dict[str, Any]:
    """``message.asdict()`` (same keys, same order: ``tests/test_wire.py`` checks it) with ``args`` in place
    of the message's, written out rather than looped over: every message sent builds one."""
    return {
        "queue_name": message.queue_name,
        "actor_name": message.actor_name,
        "args": args,
        "kwargs": message.kwargs,
        "options": message.options,
        "message_id": message.message_id,
        "message_timestamp": message.message_timestamp,
    }


def _is_flat(message: Message) -> bool:
    return bool(message.options.get(FLAT_FIELDS_OPTION) and message.args and isinstance(message.args[0], dict))


def encode_envelope(message: Message) -> bytes:
    """The ``message`` field alone. A flat message's envelope has no arguments: its fields travel
    beside it (a dead letter keeps the entry's fields and replaces only this one)."""
    if _is_flat(message):
        return dumps(_flat_envelope(message, message.args[0], {}))
    return dumps(_envelope(message, message.args))


def encode_message(message: Message) -> Fields:
    """The stream entry fields for ``message``.

    A message with :data:`FLAT_FIELDS_OPTION` carries its first argument's fields as the
    entry's own fields, readable by anyone, and an envelope without arguments.
    """
    if _is_flat(message):
        return encode_flat(message, message.args[0])
    return {ENVELOPE_FIELD: dumps(_envelope(message, message.args))}


def entry_items(message: Message) -> list[str | bytes]:
    """:func:`encode_message`'s fields and values, alternating, as ``XADD`` takes them (a send's
    path: a message that is not flat is one field, written without building the dict)."""
    if _is_flat(message):
        return [item for pair in encode_flat(message, message.args[0]).items() for item in pair]
    return [ENVELOPE_FIELD, dumps(_envelope(message, message.args))]


def decode_envelope(raw: bytes) -> Message:
    """Validate a JSON envelope and build the message it describes."""
    data = _envelope_data(raw)
    return _message(data, tuple(data["args"]))


def encode_flat(message: Message, frame: dict[str, Any], **changes: Any) -> Fields:
    """``encode_message(message.copy(args=(frame,), ...))`` without making the copy (the router's
    hot path): ``changes`` replace envelope fields (``queue_name``, ``actor_name``, ``options``,
    the latter whole, not merged as ``copy`` merges it)."""
    fields: Fields = {name: value if isinstance(value, bytes) else str(value).encode() for name, value in frame.items()}
    fields[ENVELOPE_FIELD] = dumps(_flat_envelope(message, frame, changes))
    return fields


def _flat_envelope(message: Message, frame: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The envelope of a flat message: no arguments, ``changes`` applied, and the names of its
    bytes-valued fields in :data:`BINARY_FIELDS_OPTION` (recomputed, never copied from a decoded one)."""
    envelope = _envelope(message, ())
    envelope.update(changes)
    binary = [name for name, value in frame.items() if isinstance(value, bytes)]
    options = envelope["options"]
    if binary or BINARY_FIELDS_OPTION in options:
        options = {name: value for name, value in options.items() if name != BINARY_FIELDS_OPTION}
        envelope["options"] = {**options, BINARY_FIELDS_OPTION: binary} if binary else options
    return envelope


def _loads(raw: bytes) -> Any:
    """orjson, or the stdlib where the JSON may hold an integer beyond 64 bits: :func:`dumps` writes
    those with the stdlib, and orjson reads them back as floats (``2**64 + 1`` became
    ``1.8446744073709552e19``), so an actor got other arguments than it was sent."""
    try:
        if _LONG_DIGITS in raw.translate(_DIGITS_AS_NINES):
            return json.loads(raw)
        return orjson.loads(raw)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MalformedEntry(f"the 'message' field is not valid JSON ({error})") from None


def _envelope_data(raw: bytes) -> dict[str, Any]:
    """The envelope's JSON object, every required field there with the right type."""
    data = _loads(raw)
    try:
        usual = type(data) is dict and tuple(map(type, _REQUIRED_VALUES(data))) == _EXACT_TYPES
    except KeyError:
        usual = False  # a field is missing: the checks below say which
    if usual:
        _check_options(data["options"])
        return data  # the usual case, checked at once (decoded JSON has exactly these types)
    if not isinstance(data, dict):
        raise MalformedEntry(f"the 'message' field is JSON {type(data).__name__}, not an object")
    for name, kind in _REQUIRED.items():
        if name not in data:
            raise MalformedEntry(f"the message envelope has no {name!r}")
        value = data[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise MalformedEntry(f"the message envelope's {name!r} is {type(value).__name__}, expected {kind.__name__}")
    _check_options(data["options"])
    return data


#: The option names and value types (in order) of envelopes that passed :func:`_check_options`:
#: its checks depend on nothing else (``eta`` aside, never remembered), and a queue's messages carry
#: the same few shapes. At most :data:`_GOOD_OPTION_SHAPES_MAX`.
_good_option_shapes: set[tuple[tuple[str, ...], tuple[type, ...]]] = set()
_GOOD_OPTION_SHAPES_MAX = 256


def _check_options(options: dict[str, Any]) -> None:
    shape = (tuple(options), tuple(map(type, options.values())))
    if shape in _good_option_shapes:
        return
    _check_each_option(options)
    if "eta" not in options and len(_good_option_shapes) < _GOOD_OPTION_SHAPES_MAX:
        _good_option_shapes.add(shape)


def _check_each_option(options: dict[str, Any]) -> None:
    for name, value in options.items():
        kinds = _OPTION_TYPES.get(name)
        if kinds is not None:
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                expected = " or ".join("null" if kind is type(None) else kind.__name__ for kind in kinds)
                raise MalformedEntry(
                    f"the message envelope's option {name!r} is {type(value).__name__}, expected {expected}"
                )
        elif name == "eta":
            _check_eta(value)
        elif name in _LOCAL_OPTIONS:
            why = _LOCAL_OPTIONS[name]
            raise MalformedEntry(f"the message envelope's option {name!r} cannot come from a stream: {why}")


def _check_eta(eta: Any) -> None:
    """A future ``eta`` would park the message in the worker's memory (pending, its lease renewed)
    until then, for ever if far enough; this broker never writes one (delays wait in the delayed
    set). A due, ``null`` or non-numeric one is harmless: Dramatiq's worker runs the message now."""
    if isinstance(eta, int | float) and not isinstance(eta, bool) and eta > time.time() * 1000 + ETA_TOLERANCE_MS:
        raise MalformedEntry(
            "the message envelope's option 'eta' is in the future: delayed messages wait in the delayed set, "
            "not in a worker"
        )


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
    options = data["options"]
    if options.get(FLAT_FIELDS_OPTION):
        binary = _binary_names(options)
        try:
            frame = _frame_fields(fields, binary)
        except UnicodeDecodeError:
            # Refused rather than repaired with U+FFFD: a producer only writes text, and a frame
            # whose id or image was silently altered would be processed as something it is not.
            raise MalformedEntry(_not_utf8(fields)) from None
        return _message(data, (frame,))
    return _message(data, tuple(data["args"]))


#: Field names of flat entries, decoded once (a frame's dozen names repeat in every entry): at most
#: :data:`_FIELD_NAMES_MAX`, so that entries with ever new names do not grow it without end.
_field_names: dict[bytes, str] = {}
_FIELD_NAMES_MAX = 256


def _frame_fields(fields: dict[bytes, bytes], binary: frozenset[bytes]) -> dict[str, str | bytes]:
    """A flat entry's frame: its fields less the envelope and the dead-letter notes, names and text
    values decoded (UTF-8, strictly), binary values as they are. A known name costs one lookup."""
    frame: dict[str, str | bytes] = {}
    names = _field_names
    for name, value in fields.items():
        text = names.get(name)
        if text is None:
            if name == _ENVELOPE_KEY or name.startswith(b"dead_"):
                continue
            text = name.decode()
            if len(names) < _FIELD_NAMES_MAX:
                names[name] = text
        frame[text] = value if name in binary else value.decode()
    return frame


#: The binary field names of the lists last decoded (``["image"]`` for nearly every frame), checked once.
_binary_seen: dict[tuple[str, ...], frozenset[bytes]] = {}

#: The most lists :data:`_binary_seen` keeps (a writer that varies them does not grow it without end).
_BINARY_SEEN_MAX = 64


def _binary_names(options: dict[str, Any]) -> frozenset[bytes]:
    names = options.get(BINARY_FIELDS_OPTION)
    if not names:
        return frozenset()
    key = tuple(names) if type(names) is list else None
    known = _binary_seen.get(key) if key is not None and all(map(str.__instancecheck__, key)) else None
    if known is not None:
        return known
    if not all(isinstance(name, str) for name in names):
        raise MalformedEntry(f"the message envelope's option {BINARY_FIELDS_OPTION!r} must list field names")
    known = frozenset(name.encode() for name in names)
    if key is not None:
        if len(_binary_seen) >= _BINARY_SEEN_MAX:
            _binary_seen.clear()
        _binary_seen[key] = known
    return known


def _not_utf8(fields: dict[bytes, bytes]) -> str:
    for name, value in fields.items():
        for part, text in (("name", name), ("value", value)):
            try:
                text.decode()
            except UnicodeDecodeError:
                shown = name.decode("utf-8", "replace")
                return f"the frame field {shown!r} has a {part} that is not UTF-8 text"
    return "a frame field is not UTF-8 text"


def delayed_member(fields: Fields, nonce: str) -> bytes:
    """A sorted-set member that carries an entry until it is due.

    The nonce keeps two identical messages delayed at once from collapsing
    into one member. It is JSON whose strings hold each field's bytes as they are
    (``claim.lua``'s cjson copies string bytes and does not ask for UTF-8), so a
    binary field comes back byte for byte: every byte is read as Latin-1, escaped
    as JSON escapes it, and written back as that one byte.
    """
    flat: list[str] = []
    for name, value in fields.items():
        flat.append(name)
        flat.append(value.decode("latin-1") if isinstance(value, bytes) else str(value).encode().decode("latin-1"))
    return json.dumps({"n": nonce, "f": flat}, ensure_ascii=False, separators=(",", ":")).encode("latin-1")
