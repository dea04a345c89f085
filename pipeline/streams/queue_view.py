"""``broker.queues[name]``: a small handle on one queue's stream.

It gives tests and tools the StubBroker's way of looking at a queue
(``put`` raw encoded messages, ``get`` the next one, ``qsize``) without a worker.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from dramatiq.errors import QueueJoinTimeout

from .keys import ENVELOPE_FIELD
from .wire import decode_envelope

if TYPE_CHECKING:
    from .interface import BrokerCore

#: The consumer name ``get`` reads as; its entries are deleted at once.
INSPECTOR = "frameflow-inspector"


class QueueView:
    def __init__(self, broker: BrokerCore, queue_name: str) -> None:
        self.broker = broker
        self.queue_name = queue_name

    def qsize(self) -> int:
        """Entries in the stream: waiting or being processed (delayed ones not counted)."""
        return int(self.broker.client.xlen(self.broker.keys_for(self.queue_name).stream))

    def put(self, data: bytes) -> None:
        """Append an already-encoded Dramatiq message (validated first)."""
        decode_envelope(data)
        self.broker.client.xadd(self.broker.keys_for(self.queue_name).stream, {ENVELOPE_FIELD: data})

    def get(self, timeout: float | None = None) -> bytes:
        """Take the next message off the queue and return its encoded envelope.

        Raises:
          QueueJoinTimeout: when nothing arrives within ``timeout`` seconds.
        """
        keys = self.broker.keys_for(self.queue_name)
        client = self.broker.client
        deadline = time.monotonic() + (timeout if timeout is not None else 3600.0)
        self.broker.run_claim(keys, INSPECTOR, 0)  # creates the group if needed
        while True:
            block_ms = max(1, int((deadline - time.monotonic()) * 1000))
            response = client.xreadgroup(self.broker.group, INSPECTOR, {keys.stream: ">"}, count=1, block=block_ms)
            if response:
                entry_id, fields = response[0][1][0]
                self.broker.acknowledge(keys, [entry_id])
                return fields[ENVELOPE_FIELD.encode()]
            if time.monotonic() >= deadline:
                raise QueueJoinTimeout(self.queue_name)
