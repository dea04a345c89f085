"""What the broker's parts (consumer, dead letters, queue views, a dispatcher) need of their broker.

:class:`~pipeline.streams.broker.RedisStreamsBroker` is the one implementation. The
parts are written against this protocol rather than the class, so the broker module
imports them and none of them imports it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from dramatiq import Message
from redis.commands.core import Script

from .connection import RedisClient

if TYPE_CHECKING:
    from .acks import AckBatcher
    from .direct import RoundTrips
    from .keys import QueueKeys
    from .leases import HeldEntries, LeaseKeeper


class BrokerCore(Protocol):
    """The broker as its parts see it."""

    client: RedisClient
    direct: RoundTrips
    namespace: str
    group: str
    lease_ms: int
    scripts: dict[str, Script]
    scripts_by_sha: dict[str, Script]
    leases: LeaseKeeper

    @property
    def consumer_name(self) -> str: ...

    def keys_for(self, queue_name: str) -> QueueKeys: ...

    def held_entries(self, queue_name: str) -> HeldEntries: ...

    def ack_batcher(self, queue_name: str) -> AckBatcher: ...

    def on_worker_thread(self) -> bool: ...

    def acknowledge(self, keys: QueueKeys, entry_ids: list[bytes]) -> None: ...

    def dead_letter(self, keys: QueueKeys, entry_id: bytes, reason: str, envelope: bytes | None) -> None: ...

    def remember_failure(self, message_id: str, error: BaseException) -> None: ...

    def run_claim(self, keys: QueueKeys, consumer_name: str, count: int) -> tuple[list, Any, list[bytes]]: ...

    def release_references(self, references: Sequence[bytes]) -> None: ...

    def add_scripts(self, scripts: dict[str, Script]) -> None: ...

    def decode_envelope(self, raw: bytes) -> Message: ...
