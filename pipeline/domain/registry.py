"""The processor registry: who is alive, what they can do, how loaded they are.

Each processor is one hash, ``<ns>:processor:<id>``, whose TTL is its
liveness: a heartbeat rewrites its stats and pushes the TTL forward; a
processor that stops heartbeating (crashed, partitioned) simply expires and is
dead everywhere at once. A set, ``<ns>:processors``, indexes the ids ever
registered so dead ones can still be listed (and reaped). Registering an id
that already exists (a restart after a crash) overwrites it: that is normal.

An entry carries its processor's heartbeat interval, so a reader can tell a processor
that stopped beating (:meth:`ProcessorInfo.is_stale`: killed, stalled) before its
entry expires, and the processing rate over the last interval (``frames_per_s``).

Every change is announced on the ``<ns>:registry`` channel, and stamps a new
random token into ``<ns>:registry:version``: a reader that kept what it read
(:mod:`pipeline.domain.registry_view`, the router's view) asks whether the token
is still the one it read with, instead of reading every entry again.

With an allow-list (``FRAMEFLOW_ALLOWED_PROCESSORS``), :meth:`ProcessorRegistry.register`
refuses other ids, and :meth:`ProcessorRegistry.list` (what routers, the scheduler and
the CLI read) leaves out entries of other ids that someone wrote into Redis by hand.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import redis
from redis.commands.core import Script

from pipeline.domain.keys import (
    offered_capabilities_key,
    processor_key,
    processors_index_key,
    registry_channel,
    registry_version_key,
)
from pipeline.errors import RegistrationRefused
from pipeline.settings import Settings, processor_allowed

logger = logging.getLogger(__name__)

#: Ids of entries outside the allow-list already warned about by this process (once each).
_IGNORED: set[str] = set()

#: A live entry whose last heartbeat is more than this many of its intervals old is stale.
STALE_AFTER_INTERVALS = 1.5

#: Refreshes an existing entry and nothing else (``scripts/heartbeat.lua``).
HEARTBEAT_SCRIPT = (Path(__file__).parent / "scripts" / "heartbeat.lua").read_text()

#: Breaker states as stored in the registry.
BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN = "closed", "open", "half_open"


@dataclasses.dataclass(frozen=True)
class ProcessorInfo:
    """What a processor says about itself when it registers, plus its latest heartbeat."""

    processor_id: str
    capabilities: tuple[str, ...]
    capacity: int
    queue_name: str
    actor_name: str
    result_stream: str | None = None
    health_endpoint: str | None = None
    version: str = ""
    host: str = dataclasses.field(default_factory=socket.gethostname)
    pid: int = dataclasses.field(default_factory=os.getpid)
    registered_at: float = dataclasses.field(default_factory=time.time)
    heartbeat_at: float = 0.0
    in_flight: int = 0
    processed: int = 0
    failed: int = 0
    rejected: int = 0
    latency_ms: float = 0.0
    breaker: str = BREAKER_CLOSED
    breaker_since: float = 0.0
    draining: bool = False
    queue_bound: int = 0
    overflow: str = "drop_oldest"
    last_error: str = ""
    last_rejection: str = ""
    heartbeat_interval_s: float = 0.0
    frames_per_s: float = 0.0
    #: ``camera``: the router keeps each camera's frames on one instance (middleware/affinity.py).
    affinity: str = ""
    alive: bool = True

    def is_stale(self, now: float | None = None) -> bool:
        """Alive in the registry, but its last heartbeat is over :data:`STALE_AFTER_INTERVALS`
        intervals old (an entry without its interval, written by an older version, never is)."""
        if not self.alive or self.heartbeat_interval_s <= 0:
            return False
        age_s = (time.time() if now is None else now) - self.heartbeat_at
        return age_s > STALE_AFTER_INTERVALS * self.heartbeat_interval_s

    def to_fields(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        for field in dataclasses.fields(self):
            if field.name == "alive":
                continue
            value = getattr(self, field.name)
            if field.name == "capabilities":
                fields[field.name] = json.dumps(list(value))
            elif value is None:
                fields[field.name] = ""
            elif isinstance(value, bool):
                fields[field.name] = "1" if value else "0"
            else:
                fields[field.name] = str(value)
        return fields

    @classmethod
    def from_fields(cls, raw: Mapping[bytes, bytes], *, alive: bool = True) -> ProcessorInfo:
        text = {name.decode(): value.decode("utf-8", "replace") for name, value in raw.items()}
        kwargs: dict[str, Any] = {"alive": alive}
        for field in dataclasses.fields(cls):
            if field.name not in text:
                continue
            value = text[field.name]
            if field.name == "capabilities":
                kwargs[field.name] = tuple(json.loads(value or "[]"))
            elif field.name in ("result_stream", "health_endpoint"):
                kwargs[field.name] = value or None
            elif field.type in ("int",):
                kwargs[field.name] = int(value or 0)
            elif field.type in ("float",):
                kwargs[field.name] = float(value or 0)
            elif field.type in ("bool",):
                kwargs[field.name] = value == "1"
            else:
                kwargs[field.name] = value
        return cls(**kwargs)


class ProcessorRegistry:
    """Register, heartbeat, deregister and look up processors.

    Parameters:
      client: the Redis client.
      namespace: key prefix (the broker's namespace).
      allowed: the ids (shell-style patterns) that may register; default
        ``FRAMEFLOW_ALLOWED_PROCESSORS``; empty: any.
    """

    def __init__(
        self, client: redis.Redis, namespace: str = "frameflow", allowed: tuple[str, ...] | None = None
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.allowed = Settings.from_env().allowed_processors if allowed is None else tuple(allowed)
        self.index_key = processors_index_key(namespace)
        self.channel = registry_channel(namespace)
        self.version_key = registry_version_key(namespace)
        self._heartbeat: Script | None = None

    def key(self, processor_id: str) -> str:
        return processor_key(self.namespace, processor_id)

    def register(self, info: ProcessorInfo, ttl_s: float) -> None:
        """Announce ``info``; it stays alive for ``ttl_s`` unless heartbeats follow.

        Raises:
          RegistrationRefused: the allow-list does not allow ``info.processor_id``.
        """
        if not processor_allowed(info.processor_id, self.allowed):
            raise RegistrationRefused(info.processor_id, self.allowed)
        key = self.key(info.processor_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(key)
        pipe.hset(key, mapping={**info.to_fields(), "heartbeat_at": str(time.time())})
        pipe.pexpire(key, int(ttl_s * 1000))
        pipe.sadd(self.index_key, info.processor_id)
        if info.capabilities:
            pipe.sadd(offered_capabilities_key(self.namespace), *info.capabilities)
        pipe.execute()
        self._changed(f"register {info.processor_id}")

    def heartbeat(self, processor_id: str, ttl_s: float, **stats: Any) -> bool:
        """Refresh liveness and stats; False when the entry had expired or was deregistered
        (the caller should register again)."""
        fields = {name: _field_text(value) for name, value in stats.items()}
        fields["heartbeat_at"] = str(time.time())
        pairs = [item for field in fields.items() for item in field]
        if self._heartbeat is None:
            self._heartbeat = self.client.register_script(HEARTBEAT_SCRIPT)
        # One step (heartbeat.lua): a transaction that wrote the stats and then deleted them when the
        # entry had lapsed let routers read a partial entry in between (or for good, when the delete failed).
        if not self._heartbeat(keys=[self.key(processor_id)], args=[int(ttl_s * 1000), *pairs]):
            return False
        # Listed again, in case a scheduler reaping this id while its entry had lapsed (a Redis
        # failover, a long pause) dropped it from the index after it registered again: unlisted,
        # it would beat for ever unseen, and its capability's frames stay parked.
        if self.client.sadd(self.index_key, processor_id):
            self._changed(f"register {processor_id}")  # readers that kept the registry read it again
        return True

    def update(self, processor_id: str, **fields: Any) -> None:
        """Change some fields (breaker state, draining) without touching liveness."""
        key = self.key(processor_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.exists(key)
        pipe.hset(key, mapping={name: _field_text(value) for name, value in fields.items()})
        existed, _ = pipe.execute()
        if not existed:
            self.client.delete(key)
            return
        self._changed(f"update {processor_id}")

    def deregister(self, processor_id: str) -> bool:
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.key(processor_id))
        pipe.srem(self.index_key, processor_id)
        deleted, _ = pipe.execute()
        self._changed(f"deregister {processor_id}")
        return bool(deleted)

    def _changed(self, announcement: str) -> None:
        """Stamp a new version and announce the change, once the change is written (on their own:
        another slot than the entry's, and a Redis Cluster pipeline cannot carry PUBLISH)."""
        self.client.set(self.version_key, secrets.token_hex(8))
        self.client.publish(self.channel, announcement)

    def version(self) -> bytes | None:
        """The registry's version token: it changes with every registration, update and deregistration."""
        return self.client.get(self.version_key)  # type: ignore[return-value]

    def all_exist(self, processor_ids: Iterable[str]) -> bool:
        """Whether the entries of all ``processor_ids`` (distinct) are still there: none expired or left."""
        keys = [self.key(processor_id) for processor_id in processor_ids]
        return not keys or int(self.client.exists(*keys)) == len(keys)

    def get(self, processor_id: str) -> ProcessorInfo | None:
        raw = self.client.hgetall(self.key(processor_id))
        return _parsed(processor_id, raw) if raw else None

    def known_ids(self) -> list[str]:
        return sorted(member.decode() for member in self.client.smembers(self.index_key))

    def list(self, *, include_dead: bool = False) -> list[ProcessorInfo]:
        """Every live processor (and, with ``include_dead``, the expired ones by id only)."""
        ids = self.known_ids()
        pipe = self.client.pipeline(transaction=False)
        for processor_id in ids:
            pipe.hgetall(self.key(processor_id))
        found: list[ProcessorInfo] = []
        for processor_id, raw in zip(ids, pipe.execute(), strict=True):
            if not processor_allowed(processor_id, self.allowed):
                _warn_ignored(processor_id)
            elif raw and (info := _parsed(processor_id, raw)) is not None:
                found.append(info)
            elif include_dead:
                found.append(_dead(processor_id))
        return found

    def offered_capabilities(self) -> set[str]:
        """Every capability a processor ever registered with, live or not."""
        return {member.decode() for member in self.client.smembers(offered_capabilities_key(self.namespace))}

    def live_with(self, capability: str) -> list[ProcessorInfo]:
        return [info for info in self.list() if capability in info.capabilities]

    def dead_ids(self) -> list[str]:
        return [info.processor_id for info in self.list(include_dead=True) if not info.alive]

    def forget(self, processor_ids: Iterable[str]) -> None:
        """Drop ids from the index (the scheduler's reaping, once their backlog moved on)."""
        ids = list(processor_ids)
        if ids:
            self.client.srem(self.index_key, *ids)


def _warn_ignored(processor_id: str) -> None:
    if processor_id not in _IGNORED:
        _IGNORED.add(processor_id)
        logger.warning(
            "Ignoring the registry entry of %r: FRAMEFLOW_ALLOWED_PROCESSORS does not allow it "
            "(written to Redis without registering?).",
            processor_id,
        )


def _parsed(processor_id: str, raw: Mapping[bytes, bytes]) -> ProcessorInfo | None:
    """The entry as a :class:`ProcessorInfo`, or None (one WARNING per id) when it is not a whole one
    (written by hand, or left by an old version's heartbeat): never a traceback in a router."""
    try:
        return ProcessorInfo.from_fields(raw)
    except (TypeError, ValueError) as error:
        if processor_id not in _IGNORED:
            _IGNORED.add(processor_id)
            logger.warning("Ignoring the malformed registry entry of %r: %s", processor_id, error)
        return None


def _field_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "" if value is None else str(value)


def _dead(processor_id: str) -> ProcessorInfo:
    return ProcessorInfo(
        processor_id=processor_id, capabilities=(), capacity=0, queue_name="", actor_name="", alive=False
    )
