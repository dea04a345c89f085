"""Dead letters: what the broker gave up on, with the reason, kept for a TTL.

Each queue has one dead-letter stream (``<namespace>:dead:{<stream>}``). An
entry there is the original entry's fields plus ``dead_reason``,
``dead_queue``, ``dead_entry_id`` and ``dead_at_ms``, so ``redis-cli XRANGE``
explains itself. This module lists, requeues and purges them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from dramatiq import Message

from pipeline.errors import MalformedEntry

from .wire import decode_entry

if TYPE_CHECKING:
    from .interface import BrokerCore
    from .keys import QueueKeys


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered entry.

    ``message`` is ``None`` when the entry could not be decoded (a malformed
    entry is dead-lettered as it was found).
    """

    entry_id: str
    queue_name: str
    reason: str
    dead_at_ms: int
    fields: dict[str, str]
    message: Message | None


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _int(text: str) -> int:
    """A number written by the dead-letter script, or 0 for anything else written to the stream by hand
    (``int("soon")`` made ``frameflow dlq list`` fail on the whole queue)."""
    return int(text) if text.isascii() and text.isdigit() else 0


def parse_dead_letter(entry_id: bytes, raw: dict[bytes, bytes]) -> DeadLetter:
    try:
        message: Message | None = decode_entry(raw)
    except MalformedEntry:
        message = None
    fields = {_text(name): _text(value) for name, value in raw.items()}
    return DeadLetter(
        entry_id=_text(entry_id),
        queue_name=fields.get("dead_queue", ""),
        reason=fields.get("dead_reason", "(no reason recorded)"),
        dead_at_ms=_int(fields.get("dead_at_ms", "")),
        fields=fields,
        message=message,
    )


class DeadLetterQueue:
    """The dead letters of one queue: ``broker.dead_letter_queue("default")``."""

    def __init__(self, broker: BrokerCore, keys: QueueKeys) -> None:
        self.broker = broker
        self.keys = keys

    def __len__(self) -> int:
        return int(self.broker.client.xlen(self.keys.dead))

    def list(self, count: int | None = None) -> list[DeadLetter]:
        """The dead letters, oldest first (at most ``count``)."""
        entries = self.broker.client.xrange(self.keys.dead, count=count)
        return [parse_dead_letter(entry_id, fields) for entry_id, fields in entries]

    def get(self, entry_id: str) -> DeadLetter | None:
        entries = self.broker.client.xrange(self.keys.dead, min=entry_id, max=entry_id)
        return parse_dead_letter(*entries[0]) if entries else None

    def requeue(self, entry_ids: list[str] | None = None) -> int:
        """Move dead letters (all of them when ``entry_ids`` is None) back to the queue."""
        args = ["*"] if entry_ids is None else list(entry_ids)
        if not args:
            return 0
        return int(self.broker.scripts["revive"](keys=list(self.keys), args=args))

    def purge(self) -> int:
        """Delete every dead letter; returns how many there were."""
        pipe = self.broker.client.pipeline(transaction=True)
        pipe.xlen(self.keys.dead)
        pipe.delete(self.keys.dead)
        count, _ = pipe.execute()
        return int(count)
