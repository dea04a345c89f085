"""A Dramatiq broker whose queues are Redis Streams.

What it promises beyond Dramatiq's stock RedisBroker:

* at-least-once delivery with short leases: a message delivered to a worker
  that dies is delivered again within ``lease_ms`` (seconds), while a message
  whose worker is alive stays leased however long it runs (:mod:`pipeline.streams.leases`);
* acked entries are deleted (XACK + XDEL in one transaction), so a drained
  queue holds nothing;
* delays and retries wait in Redis (a sorted set moved atomically into the
  stream when due), never in worker memory;
* optionally, durable writes: with ``durability="replicated"`` a send, a routed publish
  and an ack batch return only once a replica confirmed them (:mod:`pipeline.streams.durability`);
* poison messages (delivered ``max_deliveries`` times without an ack) and
  malformed entries become dead letters with a reason;
* ``join(fail_fast=...)`` and ``dead_letters`` behave like the StubBroker's,
  so a Dramatiq test suite runs unchanged against a real Redis;
* one extension point for deciding where a message goes: a middleware that is a
  :class:`~pipeline.streams.dispatch.Dispatcher` (frameflow's routing middleware is one).

The broker knows nothing of frames: an entry's fields, its envelope and its
queue are all it reads.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

import redis
from dramatiq import Broker, Message, MessageProxy
from dramatiq.errors import QueueJoinTimeout, QueueNotFound
from dramatiq.middleware import Middleware
from redis.cluster import RedisCluster
from redis.commands.core import Script

from pipeline.errors import DeadLettered
from pipeline.settings import Settings, mask_url

from .acks import AckBatcher
from .cluster import ClusterDirectRedis
from .connection import connect
from .consumer import StreamConsumer
from .dead_letters import DeadLetterQueue
from .direct import DirectRedis, RoundTrips
from .dispatch import Dispatcher
from .durability import Durability, confirmed
from .failures import FailureMemory
from .hooks import HookTable
from .keys import CONSUMER_GROUP, QueueKeys, queue_keys, validate_queue_name
from .leases import HeldEntries, LeaseKeeper
from .lua import register_scripts
from .queue_view import QueueView
from .sending import Sending
from .shared_redis import DefaultRedis, default_redis
from .wire import decode_envelope

logger = logging.getLogger(__name__)

#: Delayed messages promoted per housekeeping pass.
PROMOTE_BATCH = 500

#: How often ``join`` looks at the queue.
JOIN_POLL_S = 0.005


class RedisStreamsBroker(Sending, Broker):
    """A Dramatiq broker on Redis Streams (its send path: :mod:`pipeline.streams.sending`).

    Parameters:
      url: a Redis URL (``redis://``, ``rediss://``, ``unix://``; ``user:password@`` works), or a
        Redis Cluster's or Sentinel's (``redis+cluster://``, ``redis+sentinel://``: :mod:`pipeline.streams.connection`).
        Defaults to ``REDIS_URL``; without one, ``localhost:6379`` when it answers, else the
        embedded Redis shared by this machine's frameflow processes (:mod:`pipeline.streams.shared_redis`),
        found or started, and used until :meth:`close`.
      client: an existing :class:`redis.Redis` (or :class:`~redis.cluster.RedisCluster`) to use instead of ``url``.
      namespace: prefix of the broker's own keys (delayed sets, dead letters).
      middleware: as for :class:`dramatiq.Broker`.
      lease_ms: how long a delivered message stays reserved without renewal.
      max_deliveries: deliveries after which an unacknowledged message is poison.
      dead_letter_ttl_ms: how long dead letters are kept.
      fail_fast_default: the default of ``join``'s ``fail_fast``, as on the StubBroker.
      durability: what a send, a routed publish and an ack wait for: ``"primary"`` (nothing more) or
        ``"replicated"`` (a replica's confirmation, :mod:`pipeline.streams.durability`), or a
        :class:`~pipeline.streams.durability.Durability`; defaults to ``FRAMEFLOW_DURABILITY``.
      **options: passed to :func:`pipeline.streams.connection.connect`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        namespace: str | None = None,
        middleware: list[Middleware] | None = None,
        lease_ms: int | None = None,
        max_deliveries: int | None = None,
        dead_letter_ttl_ms: int | None = None,
        fail_fast_default: bool = True,
        durability: Durability | str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(middleware=middleware)
        settings = Settings.from_env()
        #: The Redis chosen for want of configuration (released by :meth:`close`), else ``None``.
        self.default_redis: DefaultRedis | None = None
        if client is None:
            url = url or settings.redis_url
            if url is None:
                self.default_redis = default_redis(settings)
                url = self.default_redis.url
            client = connect(url, **options)
        self.url = mask_url(url) if url else repr(client)
        self.client: redis.Redis | RedisCluster = client
        #: The hot path's connections (:mod:`pipeline.streams.direct`, :mod:`pipeline.streams.cluster` on a Redis
        #: Cluster): sends, fetches, acks, routing.
        self.direct: RoundTrips = (
            ClusterDirectRedis(client) if isinstance(client, RedisCluster) else DirectRedis(client)
        )
        self.durability = (
            durability if isinstance(durability, Durability) else Durability.chosen(durability, settings=settings)
        )
        self.namespace = namespace or settings.namespace
        self.lease_ms = lease_ms or settings.lease_ms
        self.max_deliveries = max_deliveries or settings.max_deliveries
        self.dead_letter_ttl_ms = dead_letter_ttl_ms or settings.dead_letter_ttl_ms
        self.fail_fast_default = fail_fast_default
        self.group = CONSUMER_GROUP
        self.scripts: dict[str, Script] = {}
        #: The scripts by SHA, for round trips that run them (a Redis that lost its script cache gets them again).
        self.scripts_by_sha: dict[str, Script] = {}
        self.add_scripts(register_scripts(client, __package__))
        self.queues: dict[str, QueueView] = {}
        self.leases = LeaseKeeper(self.scripts["renew"], self.group, self.lease_ms)
        self._keys: dict[str, QueueKeys] = {}
        self._failures = FailureMemory()
        self._instance = uuid.uuid4().hex[:8]
        self._consumers: dict[str, weakref.WeakSet[StreamConsumer]] = {}
        self._held_entries: dict[str, HeldEntries] = {}
        self._ack_batchers: dict[str, AckBatcher] = {}
        self._worker_threads = threading.local()  # whether this thread processes messages
        if self.dispatcher is not None:
            self.dispatcher.attached(self)

    def __repr__(self) -> str:
        return f"<RedisStreamsBroker {self.url} namespace={self.namespace!r}>"

    @property
    def consumer_name(self) -> str:
        """This process's consumer name: host, pid (read now, so a fork gets its own) and a broker id."""
        return f"{socket.gethostname()}:{os.getpid()}:{self._instance}"

    def keys_for(self, queue_name: str) -> QueueKeys:
        keys = self._keys.get(queue_name)
        if keys is None:
            keys = self._keys[queue_name] = queue_keys(self.namespace, queue_name)
        return keys

    # -- Broker API ------------------------------------------------------------------------
    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> StreamConsumer:
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        consumer = StreamConsumer(self, queue_name, prefetch, timeout)
        self._consumers.setdefault(queue_name, weakref.WeakSet()).add(consumer)
        return consumer

    def held_entries(self, queue_name: str) -> HeldEntries:
        """The entries of ``queue_name`` this process holds (:class:`~pipeline.streams.leases.HeldEntries`),
        shared by every consumer of the queue in this process."""
        return self._held_entries.setdefault(queue_name, HeldEntries())

    def ack_batcher(self, queue_name: str) -> AckBatcher:
        """The writer of ``queue_name``'s acknowledgements in this process (:mod:`pipeline.streams.acks`),
        shared like the held set: an entry leaves the held set once its ack is written."""
        batcher = self._ack_batchers.get(queue_name)
        if batcher is None:
            keys = self.keys_for(queue_name)
            batcher = AckBatcher(
                lambda entry_ids: self.acknowledge(keys, entry_ids),
                self.held_entries(queue_name).release_acked,
                lambda commands: self.writes.execute_many(commands, scripts=self.scripts_by_sha),
                name=f"frameflow-acks-{queue_name}",
            )
            batcher = self._ack_batchers.setdefault(queue_name, batcher)
        return batcher

    @property
    def durability(self) -> Durability:
        """What the writes that must last wait for; setting it changes :attr:`writes`."""
        return self._durability

    @durability.setter
    def durability(self, durability: Durability) -> None:
        self._durability = durability
        #: :attr:`direct` for the writes that must last (sends, routing, acks): confirmed by a replica when
        #: :attr:`durability` asks for it (:mod:`pipeline.streams.durability`), else :attr:`direct` itself.
        self.writes: RoundTrips = confirmed(self.direct, durability)

    def declare_queue(self, queue_name: str) -> None:
        if queue_name in self.queues:
            return
        validate_queue_name(queue_name)
        self.emit_before("declare_queue", queue_name)
        self.queues[queue_name] = QueueView(self, queue_name)
        self.emit_after("declare_queue", queue_name)

    def add_middleware(self, middleware: Middleware, *, before: type | None = None, after: type | None = None) -> None:
        """As Dramatiq's; a :class:`~pipeline.streams.dispatch.Dispatcher` becomes this broker's (one at most)."""
        if isinstance(middleware, Dispatcher):
            if self.dispatcher is not None:
                raise ValueError(f"{self!r} already has a dispatcher, {self.dispatcher!r}")
            self._dispatcher = middleware
        super().add_middleware(middleware, before=before, after=after)
        self._hook_table().clear()
        if isinstance(middleware, Dispatcher) and "scripts" in self.__dict__:  # else __init__ attaches it
            middleware.attached(self)

    def add_scripts(self, scripts: dict[str, Script]) -> None:
        """Make ``scripts`` (:func:`pipeline.streams.lua.register_scripts`) runnable by name on this broker,
        and known by SHA to its round trips: a layer above adds its own (a dispatcher, when attached)."""
        self.scripts.update(scripts)
        self.scripts_by_sha.update({script.sha: script for script in scripts.values()})

    def refresh_hooks(self) -> None:
        """Look up the middleware's hooks again: one of them changed its ``idle_hooks`` (:mod:`.hooks`)."""
        self._hook_table().clear()

    def _hook_table(self) -> HookTable:
        # Broker.__init__ adds the default middleware before our __init__ runs.
        table = self.__dict__.get("_hooks")
        if table is None:
            table = self._hooks = HookTable(self.logger)
        return table

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """As Dramatiq's, calling only the hooks a middleware defines (:mod:`pipeline.streams.hooks`)."""
        if signal == "process_message":
            self._worker_threads.worker = True  # its acks are batched (StreamConsumer.ack)
        self._hooks.emit(self, "before_" + signal, args, kwargs)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        """As Dramatiq's: in reverse order, every failure logged."""
        self._hooks.emit(self, "after_" + signal, args, kwargs)

    def on_worker_thread(self) -> bool:
        """Whether this thread processes messages (a Dramatiq worker thread)."""
        return getattr(self._worker_threads, "worker", False)

    def get_declared_queues(self) -> set[str]:
        return set(self.queues)

    def flush(self, queue_name: str) -> None:
        """Drop every message of ``queue_name``, ready and delayed (dead letters stay)."""
        keys = self.keys_for(queue_name)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(keys.stream, keys.delayed)
        pipe.xgroup_create(keys.stream, self.group, id="0", mkstream=True)
        pipe.execute()

    def flush_all(self) -> None:
        """Drop every message of every declared queue, and their dead letters."""
        for queue_name in self.queues:
            self.flush(queue_name)
            self.client.delete(self.keys_for(queue_name).dead)
        self._failures.clear()

    def join(self, queue_name: str, *, timeout: int | None = None, fail_fast: bool | None = None) -> None:
        """Wait until every message of ``queue_name`` (ready, running or delayed) is done.

        Parameters:
          timeout: the most milliseconds to wait; :class:`QueueJoinTimeout` after that.
          fail_fast: when true, raise the exception of a dead-lettered message of this
            queue (a copy of the original, same type and arguments, if it failed in
            this process, else :class:`~pipeline.errors.DeadLettered`). Defaults to
            ``fail_fast_default``.
        """
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        keys = self.keys_for(queue_name)
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        while True:
            pipe = self.client.pipeline(transaction=True)
            pipe.xlen(keys.stream)
            pipe.zcard(keys.delayed)
            ready, delayed = pipe.execute()
            if ready == 0 and delayed == 0:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)
            time.sleep(JOIN_POLL_S)
        should_fail_fast = self.fail_fast_default if fail_fast is None else fail_fast
        if should_fail_fast:
            for proxy in self._dead_letter_proxies(queue_name):
                raise proxy._exception or DeadLettered("dead-lettered", proxy.message_id)

    def close(self) -> None:
        for batcher in list(self._ack_batchers.values()):
            if not batcher.close():
                logger.warning("Closed with %d ack(s) unwritten; they will be redelivered.", batcher.pending)
        self.leases.stop()
        self.direct.close()
        if self.default_redis is not None:
            self.client.close()
            self.default_redis.release()
            self.default_redis = None

    # -- dead letters ----------------------------------------------------------------------
    def dead_letter_queue(self, queue_name: str) -> DeadLetterQueue:
        """List, requeue and purge the dead letters of ``queue_name``."""
        return DeadLetterQueue(self, self.keys_for(queue_name))

    @property
    def dead_letters(self) -> list[MessageProxy]:
        """The dead-lettered messages of every declared queue, as on the StubBroker."""
        return [proxy for queue_name in self.queues for proxy in self._dead_letter_proxies(queue_name)]

    def _dead_letter_proxies(self, queue_name: str) -> list[MessageProxy]:
        return self._failures.proxies(self.dead_letter_queue(queue_name).list())

    def remember_failure(self, message_id: str, error: BaseException) -> None:
        """Keep a detached copy of ``error`` for ``join(fail_fast=True)`` (:mod:`pipeline.streams.failures`)."""
        self._failures.remember(message_id, error)

    # -- operations the consumer runs ------------------------------------------------------
    def acknowledge(self, keys: QueueKeys, entry_ids: list[bytes]) -> None:
        """Acknowledge and delete entries, atomically (one MULTI/EXEC, one round trip)."""
        replies = self.writes.execute_many(
            [("MULTI",), ("XACK", keys.stream, self.group, *entry_ids), ("XDEL", keys.stream, *entry_ids), ("EXEC",)]
        )
        for reply in (*replies[:3], *(replies[3] if isinstance(replies[3], list) else [replies[3]])):
            if isinstance(reply, Exception):
                raise reply

    def dead_letter(self, keys: QueueKeys, entry_id: bytes, reason: str, envelope: bytes | None) -> None:
        """Dead-letter one entry with ``reason``; a dead letter is done for good, so the
        payload reference it held is released (:meth:`release_references`)."""
        reference = self.scripts["nack"](
            keys=list(keys),
            args=[
                self.group,
                entry_id,
                reason,
                envelope or b"",
                int(time.time() * 1000),
                self.dead_letter_ttl_ms,
                self._queue_name_of(keys),
            ],
        )
        if reference:
            self.release_references([reference])

    def run_claim(self, keys: QueueKeys, consumer_name: str, count: int) -> tuple[list, Any, list[bytes]]:
        claimed, next_due, poisoned, poisoned_refs = self.scripts["claim"](
            keys=list(keys),
            args=[
                self.group,
                consumer_name,
                int(time.time() * 1000),
                self.lease_ms,
                self.max_deliveries,
                count,
                self.dead_letter_ttl_ms,
                self._queue_name_of(keys),
                PROMOTE_BATCH,
            ],
        )
        self.release_references(poisoned_refs)
        return claimed, next_due, poisoned

    def release_references(self, references: Sequence[bytes]) -> None:
        """Hand the payload references of entries removed for good to the dispatcher that wrote them."""
        dispatcher = self.dispatcher
        if references and dispatcher is not None:
            dispatcher.release(self, references)

    def _queue_name_of(self, keys: QueueKeys) -> str:
        return keys.stream.replace(":", ".")

    def decode_envelope(self, raw: bytes) -> Message:
        return decode_envelope(raw)
