"""A Dramatiq broker whose queues are Redis Streams.

What it promises beyond Dramatiq's stock RedisBroker:

* at-least-once delivery with short leases: a message delivered to a worker
  that dies is delivered again within ``lease_ms`` (seconds), while a message
  whose worker is alive stays leased however long it runs (:mod:`pipeline.leases`);
* acked entries are deleted (XACK + XDEL in one transaction), so a drained
  queue holds nothing;
* delays and retries wait in Redis (a sorted set moved atomically into the
  stream when due), never in worker memory;
* poison messages (delivered ``max_deliveries`` times without an ack) and
  malformed entries become dead letters with a reason;
* ``join(fail_fast=...)`` and ``dead_letters`` behave like the StubBroker's,
  so a Dramatiq test suite runs unchanged against a real Redis.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from typing import Any

import redis
from dramatiq import Broker, Message, MessageProxy
from dramatiq.errors import ConnectionClosed, QueueJoinTimeout, QueueNotFound
from dramatiq.middleware import Middleware

from .connection import TRANSIENT_ERRORS, connect
from .consumer import StreamConsumer
from .dead_letters import DeadLetterQueue
from .embedded import EmbeddedRedis
from .errors import DeadLettered
from .keys import CONSUMER_GROUP, QueueKeys, queue_keys, validate_queue_name
from .leases import LeaseKeeper
from .lua import register_scripts
from .queue_view import QueueView
from .settings import Settings, mask_url
from .wire import decode_envelope, delayed_member, encode_message

logger = logging.getLogger(__name__)

#: How many failures ``join(fail_fast=True)`` can re-raise with their original exception type and arguments.
REMEMBERED_FAILURES = 1000

#: Delayed messages promoted per housekeeping pass.
PROMOTE_BATCH = 500

#: How often ``join`` looks at the queue.
JOIN_POLL_S = 0.005


def detach_exception(error: BaseException) -> BaseException | None:
    """A copy of ``error`` (same type, args and attributes) without its traceback,
    cause or context, made without calling ``__init__``; ``None`` if it cannot be copied."""
    try:
        copy = type(error).__new__(type(error), *error.args)
        copy.args = error.args
        copy.__dict__.update(getattr(error, "__dict__", {}))
    except Exception:
        return None
    return copy


class RedisStreamsBroker(Broker):
    """A Dramatiq broker on Redis Streams.

    Parameters:
      url: a Redis URL (``redis://``, ``rediss://``, ``unix://``; ``user:password@`` works).
        Defaults to ``REDIS_URL``; without one, an embedded Redis private to this
        broker is started (and stopped by :meth:`close`).
      client: an existing :class:`redis.Redis` to use instead of ``url``.
      namespace: prefix of the broker's own keys (delayed sets, dead letters).
      middleware: as for :class:`dramatiq.Broker`.
      lease_ms: how long a delivered message stays reserved without renewal.
      max_deliveries: deliveries after which an unacknowledged message is poison.
      dead_letter_ttl_ms: how long dead letters are kept.
      fail_fast_default: the default of ``join``'s ``fail_fast``, as on the StubBroker.
      **options: passed to :meth:`redis.Redis.from_url`.
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
        **options: Any,
    ) -> None:
        super().__init__(middleware=middleware)
        settings = Settings.from_env()
        self.embedded: EmbeddedRedis | None = None
        if client is None:
            url = url or settings.redis_url
            if url is None:
                self.embedded = EmbeddedRedis().start()
                url = self.embedded.url
                logger.info("REDIS_URL is not set: started an embedded Redis at %s for this process.", url)
            client = connect(url, **options)
        self.url = mask_url(url) if url else repr(client)
        self.client: redis.Redis = client
        self.namespace = namespace or settings.namespace
        self.lease_ms = lease_ms or settings.lease_ms
        self.max_deliveries = max_deliveries or settings.max_deliveries
        self.dead_letter_ttl_ms = dead_letter_ttl_ms or settings.dead_letter_ttl_ms
        self.fail_fast_default = fail_fast_default
        self.group = CONSUMER_GROUP
        self.scripts = register_scripts(client)
        self.queues: dict[str, QueueView] = {}
        self.leases = LeaseKeeper(self.scripts["renew"], self.group, self.lease_ms)
        self._keys: dict[str, QueueKeys] = {}
        self._failures: OrderedDict[str, BaseException] = OrderedDict()
        self._failures_lock = threading.Lock()
        self._instance = uuid.uuid4().hex[:8]
        self._consumers: dict[str, weakref.WeakSet[StreamConsumer]] = {}
        self._held_entries: dict[str, tuple[set[bytes], threading.Condition]] = {}

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

    def held_entries(self, queue_name: str) -> tuple[set[bytes], threading.Condition]:
        """The entries of ``queue_name`` this process holds, and the condition that guards them.

        Shared by every consumer of the queue in this process: after a connection error
        Dramatiq closes its consumer and consumes anew while the messages already handed
        to worker threads keep running, so their leases must go on being renewed, and
        their acks (through the new consumer) must free its prefetch slots.
        """
        return self._held_entries.setdefault(queue_name, (set(), threading.Condition()))

    def declare_queue(self, queue_name: str) -> None:
        if queue_name in self.queues:
            return
        validate_queue_name(queue_name)
        self.emit_before("declare_queue", queue_name)
        self.queues[queue_name] = QueueView(self, queue_name)
        self.emit_after("declare_queue", queue_name)

    @property
    def router(self) -> Any:
        """The routing middleware (one with ``route_message``), if the broker carries one.

        The orchestrator is a middleware, but Dramatiq's ``before_enqueue`` cannot
        redirect a message, so the broker asks it where a frame goes.
        """
        for middleware in self.middleware:
            if hasattr(middleware, "route_message"):
                return middleware
        return None

    def get_declared_queues(self) -> set[str]:
        return set(self.queues)

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        """Append ``message`` to its queue's stream, or, with ``delay`` (ms), park it in
        the queue's delayed set until it is due."""
        router = self.router
        if router is not None and not delay and "processor" not in message.options:
            capabilities = self._capabilities_of(message)
            if capabilities:
                return self._route(router, message.copy(options={"capabilities": capabilities}))
        keys = self.keys_for(message.queue_name)
        self.emit_before("enqueue", message, delay)
        fields = encode_message(message)
        try:
            if delay:
                eta_ms = int(time.time() * 1000 + delay)
                self.client.zadd(keys.delayed, {delayed_member(fields, uuid.uuid4().hex): eta_ms})
                for consumer in list(self._consumers.get(message.queue_name, ())):
                    consumer.expect_due(eta_ms)  # this process's consumers look when it is due
            else:
                self.client.xadd(keys.stream, fields)  # type: ignore[arg-type]
        except TRANSIENT_ERRORS as error:
            raise ConnectionClosed(error) from None
        self.emit_after("enqueue", message, delay)
        return message

    def _capabilities_of(self, message: Message) -> list[str]:
        """The capabilities a message asks for: its own option, else its actor's."""
        capabilities = message.options.get("capabilities")
        if not capabilities and message.actor_name in self.actors:
            capabilities = self.actors[message.actor_name].options.get("capabilities")
        if isinstance(capabilities, str):
            return [capabilities]
        return list(capabilities or ())

    def _route(self, router: Any, message: Message) -> Message:
        """Hand a frame to the routing middleware, which writes one copy per chosen processor."""
        self.emit_before("enqueue", message, None)
        decision = router.route_message(self, message)
        routed = message.copy(options={"routed_to": list(decision.targets), "parked": list(decision.parked)})
        self.emit_after("enqueue", routed, None)
        return routed

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
        with self._failures_lock:
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
        self.leases.stop()
        if self.embedded is not None:
            self.client.close()
            self.embedded.stop()
            self.embedded = None

    # -- dead letters ----------------------------------------------------------------------
    def dead_letter_queue(self, queue_name: str) -> DeadLetterQueue:
        """List, requeue and purge the dead letters of ``queue_name``."""
        return DeadLetterQueue(self, self.keys_for(queue_name))

    @property
    def dead_letters(self) -> list[MessageProxy]:
        """The dead-lettered messages of every declared queue, as on the StubBroker."""
        return [proxy for queue_name in self.queues for proxy in self._dead_letter_proxies(queue_name)]

    def _dead_letter_proxies(self, queue_name: str) -> list[MessageProxy]:
        proxies = []
        for letter in self.dead_letter_queue(queue_name).list():
            if letter.message is None:
                continue
            proxy = MessageProxy(letter.message)
            with self._failures_lock:
                error = self._failures.get(letter.message.message_id)
            proxy.stuff_exception(error or DeadLettered(letter.reason, letter.message.message_id))
            proxies.append(proxy)
        return proxies

    def remember_failure(self, message_id: str, error: BaseException) -> None:
        """Keep a detached copy of ``error`` for ``join(fail_fast=True)``.

        Never the object itself: its traceback pins the actor's frames and their
        locals (whole camera frames), and a worker would keep a thousand of them.
        """
        detached = detach_exception(error)
        if detached is None:
            return
        with self._failures_lock:
            self._failures[message_id] = detached
            while len(self._failures) > REMEMBERED_FAILURES:
                self._failures.popitem(last=False)

    # -- operations the consumer runs ------------------------------------------------------
    def acknowledge(self, keys: QueueKeys, entry_ids: list[bytes]) -> None:
        """Acknowledge and delete entries, atomically."""
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(keys.stream, self.group, *entry_ids)
        pipe.xdel(keys.stream, *entry_ids)
        pipe.execute()

    def dead_letter(self, keys: QueueKeys, entry_id: bytes, reason: str, envelope: bytes | None) -> None:
        self.scripts["nack"](
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

    def run_claim(self, keys: QueueKeys, consumer_name: str, count: int) -> tuple[list, Any, list[bytes]]:
        claimed, next_due, poisoned = self.scripts["claim"](
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
        return claimed, next_due, poisoned

    def _queue_name_of(self, keys: QueueKeys) -> str:
        return keys.stream.replace(":", ".")

    def decode_envelope(self, raw: bytes) -> Message:
        return decode_envelope(raw)
