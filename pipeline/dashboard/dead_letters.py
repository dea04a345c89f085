"""The dead letters of every queue on one page: ``frameflow dlq list`` for all queues at once."""

from __future__ import annotations

from typing import Any

import redis

from pipeline.streams.broker import RedisStreamsBroker
from pipeline.streams.dead_letters import DeadLetter
from pipeline.tools.overview import snapshot_queues

#: Dead letters listed per queue, oldest first.
LISTED_PER_QUEUE = 100


def list_dead_letters(client: redis.Redis, namespace: str, broker: RedisStreamsBroker) -> list[dict[str, Any]]:
    """Each queue with dead letters: its count and its oldest letters with their reasons."""
    queues, _ = snapshot_queues(client, namespace)
    listing = []
    for queue in queues:
        if not queue.dead_letters:
            continue
        letters = broker.dead_letter_queue(queue.queue_name)
        listing.append(
            {
                "queue_name": queue.queue_name,
                "count": queue.dead_letters,
                "letters": [_letter_view(letter) for letter in letters.list(count=LISTED_PER_QUEUE)],
            }
        )
    return listing


def _letter_view(letter: DeadLetter) -> dict[str, Any]:
    message = letter.message
    return {
        "entry_id": letter.entry_id,
        "reason": letter.reason,
        "dead_at_ms": letter.dead_at_ms,
        "message_id": message.message_id if message else None,
        "actor_name": message.actor_name if message else None,
        "frame_id": letter.fields.get("frame_id"),
        "fields": {
            name: value if len(value) <= 500 else f"<{len(value)} characters>" for name, value in letter.fields.items()
        },
    }
