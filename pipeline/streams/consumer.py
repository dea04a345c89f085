"""The consumer side of :class:`~pipeline.RedisStreamsBroker`: one consumer
per queue per worker process, reading the queue's stream through its consumer
group, never holding more than its prefetch.
"""

from __future__ import annotations

import logging
import reprlib
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from dramatiq import Consumer, Message, MessageProxy
from dramatiq.errors import ConnectionClosed
from redis.exceptions import ResponseError

from pipeline.errors import MalformedEntry
from pipeline.settings import MIN_IDLE_CONSUMER_S

from .connection import TRANSIENT_ERRORS
from .wire import decode_entry, encode_envelope

if TYPE_CHECKING:
    from .interface import BrokerCore

logger = logging.getLogger(__name__)

#: Upper bound on how long lapsed leases and due delayed messages wait for a busy consumer to look.
HOUSEKEEPING_INTERVAL_S = 0.25

#: How often a consumer says it lives (its name, scored with the time, in the queue's consumers set),
#: whatever it is doing: the scheduler removes from the group a consumer that holds nothing and has
#: not said so for a while (``remove_idle_consumers.lua``).
LIVENESS_INTERVAL_S = MIN_IDLE_CONSUMER_S / 3

#: Text and bytes values longer than this show in log lines as their length only.
LOGGED_VALUE_MAX = 120


class _LoggedRepr(reprlib.Repr):
    """``repr`` for log lines: an image a message carries (a megabyte of bytes or of base64) shows
    as ``<1048576 bytes>``, never as its content; containers are cut short too."""

    def __init__(self) -> None:
        super().__init__()
        self.maxother = LOGGED_VALUE_MAX
        self.maxdict = self.maxlist = self.maxtuple = 20
        self.maxlevel = 4

    def repr_str(self, value: str, level: int) -> str:
        return repr(value) if len(value) <= LOGGED_VALUE_MAX else f"<{len(value)} characters>"

    def repr_bytes(self, value: bytes, level: int) -> str:
        return repr(value) if len(value) <= LOGGED_VALUE_MAX else f"<{len(value)} bytes>"


_LOGGED = _LoggedRepr()


def shortened(message: Message) -> str:
    """``actor(arg, ..., name=value)`` as Dramatiq's ``str(message)`` writes it, long values cut short."""
    params = [_LOGGED.repr(arg) for arg in message.args]
    params += [f"{name}={_LOGGED.repr(value)}" for name, value in message.kwargs.items()]
    return f"{message.actor_name}({', '.join(params)})"


#: How long ``close`` waits for pending acks to be written.
ACK_FLUSH_TIMEOUT_S = 5.0


class StreamMessageProxy(MessageProxy):
    """A delivered message, remembering the stream entry it came from, and what its ack writes."""

    def __init__(self, message, entry_id: bytes) -> None:
        super().__init__(message)
        # The message's fields as the proxy's own attributes (a Message is frozen, so they cannot
        # go stale): the middleware of a processor read them some 25 times per delivery, each
        # time through MessageProxy.__getattr__ otherwise.
        self.queue_name = message.queue_name
        self.actor_name = message.actor_name
        self.args = message.args
        self.kwargs = message.kwargs
        self.options = message.options
        self.message_id = message.message_id
        self.message_timestamp = message.message_timestamp
        self.entry_id = entry_id
        #: Commands written in the same round trip as the ack, just before it (:mod:`pipeline.streams.acks`).
        self.ack_writes: list[tuple] = []

    def __str__(self) -> str:
        # Dramatiq's worker logs the message itself ("Message %s was skipped.", "Failed to process
        # message %s ..."): its own str() would print every argument in full, a frame's image included.
        return shortened(self._message)

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} {self.message_id} {shortened(self._message)}>"

    def write_with_ack(self, *command: Any) -> None:
        """Run ``command`` with this message's acknowledgement: written, with the other acks of its
        batch, just before the ack; the message is only acked once it is written. A message that is
        not acked (dead-lettered, or delivered again after its worker died) writes nothing."""
        self.ack_writes.append(command)


def describe_failure(message: MessageProxy) -> str:
    """The dead-letter reason for a rejected message: exception type and text."""
    error = message._exception
    if error is None:
        return "rejected without an exception (failed by a middleware)"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class StreamConsumer(Consumer):
    """Iterates over one queue's messages.

    ``__next__`` blocks on ``XREADGROUP`` for at most ``timeout`` ms; before
    blocking it runs ``claim.lua`` (due delayed messages, lapsed leases, poison)
    at most every :data:`HOUSEKEEPING_INTERVAL_S`, or when a delayed message falls due,
    and says it lives every :data:`LIVENESS_INTERVAL_S`, even while its prefetch is full.
    ``ack``/``nack`` are called from worker threads and are thread-safe.
    """

    def __init__(self, broker: BrokerCore, queue_name: str, prefetch: int, timeout: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.keys = broker.keys_for(queue_name)
        self.stream = self.keys.stream
        self.consumer_name = broker.consumer_name
        self.prefetch = max(1, prefetch)
        self.timeout = max(1, int(timeout))
        self._cache: deque[tuple[bytes, dict[bytes, bytes]]] = deque()
        # Shared with this process's earlier and later consumers of the queue (see HeldEntries).
        self._held = broker.held_entries(queue_name)
        self._acks = broker.ack_batcher(queue_name)
        self._next_housekeeping = 0.0
        self._next_due_ms: float | None = None
        self._due_hint_ms: float | None = None
        self._visible = False
        self._next_touch = 0.0
        broker.leases.watch(self)

    # -- lease holder ------------------------------------------------------------------------
    def held_ids(self) -> list[bytes]:
        return self._held.snapshot()

    def forget(self, entry_ids: Iterable[bytes]) -> None:
        self._held.forget(entry_ids)

    def expect_due(self, eta_ms: float) -> None:
        """A delayed message of this queue, enqueued by this process, falls due at ``eta_ms``
        (epoch ms): promote it then rather than at the next housekeeping pass."""
        with self._held.changed:
            if self._due_hint_ms is None or eta_ms < self._due_hint_ms:
                self._due_hint_ms = eta_ms

    # -- Consumer API ------------------------------------------------------------------------
    def ack(self, message: StreamMessageProxy) -> None:  # type: ignore[override]
        """Hand the ack to the queue's batcher, which writes it with others in one transaction
        (:mod:`pipeline.streams.acks`); the entry stays held, its lease renewed, until then.

        On a worker thread (one that processes messages) this returns at once: a worker that
        dies before the write only leaves its messages to be delivered again. A delivery that raised
        (and is acked because Retries sent a retry) writes nothing of its ``ack_writes``. Anywhere else
        (tools, a consumer driven by hand) it returns once the ack is written, as Dramatiq's
        brokers do, and raises ConnectionClosed if that takes longer than ACK_FLUSH_TIMEOUT_S.
        """
        self._held.acked()
        self._acks.submit(message.entry_id, message.ack_writes if message._exception is None else [])
        if not self.broker.on_worker_thread() and not self._acks.flush(ACK_FLUSH_TIMEOUT_S):
            raise ConnectionClosed(TimeoutError(f"the ack of {message.entry_id.decode()} is not written yet"))

    def flush_acks(self, timeout: float | None = None) -> bool:
        """Wait until the acks handed over so far are written; False on timeout."""
        return self._acks.flush(timeout)

    def nack(self, message: StreamMessageProxy) -> None:  # type: ignore[override]
        reason = describe_failure(message)
        if message._exception is not None:
            # Before the dead letter exists: a join that sees it must find the original exception.
            self.broker.remember_failure(message.message_id, message._exception)
        try:
            self.broker.dead_letter(self.keys, message.entry_id, reason, encode_envelope(message._message))
        except TRANSIENT_ERRORS as error:
            raise ConnectionClosed(error) from None
        self.forget([message.entry_id])

    def requeue(self, messages: Iterable[StreamMessageProxy]) -> None:  # type: ignore[override]
        entry_ids = [message.entry_id for message in messages]
        self._requeue(entry_ids)

    def _requeue(self, entry_ids: list[bytes]) -> None:
        if not entry_ids:
            return
        logger.debug("Requeueing %d message(s) on %s.", len(entry_ids), self.stream)
        try:
            self.broker.scripts["requeue"](keys=[self.stream], args=[self.broker.group, self.consumer_name, *entry_ids])
        except TRANSIENT_ERRORS as error:
            raise ConnectionClosed(error) from None
        self.forget(entry_ids)

    def close(self) -> None:
        """Hand back what was fetched but never handed to the worker, and write the pending acks."""
        if not self._acks.flush(ACK_FLUSH_TIMEOUT_S):
            logger.warning("%d ack(s) on %s not written yet; still trying.", self._acks.pending, self.stream)
        cached = [entry_id for entry_id, _ in self._cache]
        self._cache.clear()
        try:
            self._requeue(cached)
        except ConnectionClosed:
            self.forget(cached)  # stop renewing them, so that they do lapse
            logger.warning("Could not requeue %d prefetched message(s); their leases will lapse.", len(cached))

    def __next__(self) -> StreamMessageProxy | None:
        try:
            while True:
                if self._cache:
                    entry_id, fields = self._cache.popleft()
                    try:
                        return StreamMessageProxy(self._decode(fields), entry_id)
                    except MalformedEntry as error:
                        self._reject_malformed(entry_id, str(error))
                        continue
                self._say_alive()
                free = self._wait_for_slots()
                if free <= 0:
                    return None
                entries = self._fetch(free)
                if not entries:
                    return None
                self._held.add(entry_id for entry_id, _ in entries)
                self._cache.extend(entries)
        except TRANSIENT_ERRORS as error:
            raise ConnectionClosed(error) from None

    # -- internals ---------------------------------------------------------------------------
    def _say_alive(self) -> None:
        """Touch this consumer's name in the queue's consumers set, at most every :data:`LIVENESS_INTERVAL_S`:
        an idle live consumer is told from a dead one by that, not by Redis's idle time (which a
        blocked ``XREADGROUP`` resets on some versions and not on others)."""
        now = time.monotonic()
        if now < self._next_touch:
            return
        # The worker's clock, as Dramatiq's RedisBroker heartbeats: the least-privilege ACL user may not run TIME.
        self.broker.client.zadd(self.keys.consumers, {self.consumer_name: int(time.time() * 1000)})
        self._next_touch = now + LIVENESS_INTERVAL_S

    def _wait_for_slots(self) -> int:
        return self._held.wait_for_slots(self.prefetch, self.timeout / 1000)

    def _decode(self, fields: dict[bytes, bytes]) -> Message:
        """The entry's message, which must name this queue: Dramatiq's worker hands a message back
        to the consumer of the queue it names, so one naming another queue (written there by hand)
        raised KeyError in a worker thread and stayed pending, its lease renewed, for ever."""
        message = decode_entry(fields)
        if message.queue_name != self.queue_name:
            raise MalformedEntry(f"the envelope names queue {message.queue_name!r}, not {self.queue_name!r}")
        return message

    def _reject_malformed(self, entry_id: bytes, reason: str) -> None:
        logger.error("Dead-lettering malformed entry %s on %s: %s", entry_id.decode(), self.stream, reason)
        self.broker.dead_letter(self.keys, entry_id, f"malformed entry: {reason}", None)
        self.forget([entry_id])

    def _fetch(self, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        now = time.monotonic()
        now_ms = time.time() * 1000
        next_due = self._next_due()
        if now >= self._next_housekeeping or (next_due is not None and now_ms >= next_due):
            claimed = self._housekeeping(count)
            if claimed:
                return claimed
            now_ms = time.time() * 1000
            next_due = self._next_due()
        block_ms = min(self.timeout, int(LIVENESS_INTERVAL_S * 1000))  # back in time to say it lives
        if next_due is not None:
            block_ms = int(min(block_ms, max(1, next_due - now_ms)))
        try:
            response = self.broker.direct.execute(
                "XREADGROUP", "GROUP", self.broker.group, self.consumer_name,
                "COUNT", count, "BLOCK", block_ms, "STREAMS", self.stream, ">",
            )  # fmt: skip
        except ResponseError as error:
            # NOGROUP: the stream or group vanished before the read; UNBLOCKED (Redis 7): while it
            # waited. Either way claim.lua recreates them.
            if not str(error).startswith(("NOGROUP", "UNBLOCKED")):
                raise
            self._next_housekeeping = 0.0
            return []
        if not response:
            return []
        # RESP2: [[stream, entries]]; RESP3: {stream: entries}. An entry is [id, [field, value, ...]].
        entries = next(iter(response.values())) if isinstance(response, dict) else response[0][1]
        return [(entry_id, dict(zip(flat[::2], flat[1::2], strict=True))) for entry_id, flat in entries if flat]

    def _next_due(self) -> float | None:
        """When the next delayed message falls due (epoch ms), as far as this consumer knows."""
        hint = self._due_hint_ms
        if hint is None or (self._next_due_ms is not None and self._next_due_ms < hint):
            return self._next_due_ms
        return hint

    def _housekeeping(self, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        with self._held.changed:
            self._due_hint_ms = None  # hints given before the script runs are in its answer
        claimed, next_due, poisoned = self.broker.run_claim(self.keys, self.consumer_name, count)
        if not self._visible:
            # Redis 6.2 lists a consumer only once it has been served; make it visible at once
            # so that tools (and `frameflow demo`) see a worker that waits on an empty queue.
            self.broker.client.xgroup_createconsumer(self.stream, self.broker.group, self.consumer_name)
            self._visible = True
        self._next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL_S
        self._next_due_ms = float(next_due) if next_due else None
        for entry_id in poisoned:
            logger.error("Dead-lettered poison message %s on %s.", entry_id.decode(), self.stream)
        entries = []
        for entry_id, flat in claimed:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            entries.append((entry_id, fields))
        if entries:
            logger.warning("Took over %d message(s) with lapsed leases on %s.", len(entries), self.stream)
        return entries
