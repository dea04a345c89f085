"""The broker's hot-path commands, on connections of its own, past redis-py's per-command machinery.

On a 2-core machine redis-py spends 50-60 µs of CPU around each command (pool
checkout and fork check, retry wrapper, response callbacks, its observability
hooks) for a round trip that itself costs ~20 µs of client CPU. The commands
every message pays for (the ``XADD`` of a send, the ``XREADGROUP`` of a fetch,
the ack transaction, the router's pipeline) go through :class:`DirectRedis`:

* its connections are made with the client's own settings (URL, credentials,
  TLS, timeouts, health checks, the retry policy of :func:`pipeline.streams.connection.connect`),
  and kept on a stack: a caller pops one, uses it, pushes it back, so there are
  as many as there are concurrent callers, and none is shared by two threads;
* a connection is opened by its own ``connect()``, as the client's pool opens it, never
  implicitly by a send: a Sentinel-managed connection learns the master's address only in
  ``connect()`` (asked again after every disconnect, so a failover is followed), and one
  opened any other way would reach redis-py's default ``localhost:6379``, whatever answers there;
* a connection error is retried with the client's retry policy (the
  connection reconnects), exactly as redis-py retries a command: a command
  that reached Redis before the connection broke may run twice, which
  at-least-once delivery allows. Only the round trip retries: reconnecting is
  one attempt within it, so a Redis that is down fails a call after the
  policy's backoff (about 5 s), not that many times over (redis-py's connect
  retries on its own, and nested in the round trip's retry a publish waited 35 s);
* a round trip waits :data:`READ_TIMEOUT_S` for its replies (the client's ``socket_timeout`` when it
  sets one), plus the time its commands ask Redis to block (``XREADGROUP ... BLOCK``, ``WAIT``): a
  Redis that stops answering without closing its connections (a paused or partitioned primary)
  fails the round trip, which the retry policy sends again on a new connection, to the promoted
  replica once the sentinels name it, instead of waiting until that server wakes up;
* a Sentinel-managed connection whose server is no longer the master the client last learned of
  (another of the client's connections found the promoted replica) is closed before it is used,
  so an idle connection never writes to a demoted primary that came back;
* error replies in a batch are returned as :class:`~redis.exceptions.ResponseError`
  values, in order, as ``pipeline.execute(raise_on_error=False)`` returns them; a
  ``NOSCRIPT`` reply to an ``EVALSHA`` loads the script and runs that command again (and a
  ``WAIT`` that ends the batch after it, which must follow every write it confirms:
  :mod:`pipeline.streams.durability`);
* a forked child never uses its parent's sockets;
* a round trip can be split in its write (:meth:`DirectRedis.send`) and its read
  (:meth:`DirectRedis.receive`), so that a caller with several servers (a cluster's
  masters) writes to all of them before it waits for any.

Replies are RESP as hiredis parses it: no response callbacks; the replies of a batch
that arrived with its first are taken from hiredis's reader without redis-py's
per-reply wrapping (a router's round trip carries 64 copies and more). On a Redis
Cluster the broker uses :class:`pipeline.streams.cluster.ClusterDirectRedis` instead:
the same interface, one :class:`DirectRedis` per master.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import hiredis
import redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
from redis._parsers.hiredis import _HiredisParser
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.retry import Retry

from . import forks
from .connection import TRANSIENT_ERRORS

Command = Sequence[Any]

#: How long a round trip waits for its replies when the client sets no ``socket_timeout``, beyond
#: the time its commands ask Redis to block (see the module docstring).
READ_TIMEOUT_S = 5.0

#: Commands that may keep Redis from answering for a while, and where their time (ms) is: the
#: argument after ``BLOCK``, or the one at that position.
_BLOCKING: dict[str, str | int] = {"XREADGROUP": "BLOCK", "XREAD": "BLOCK", "WAIT": 2, "WAITAOF": 3}


@dataclasses.dataclass
class InFlight:
    """Commands written to a connection whose replies are still to be read (:meth:`DirectRedis.send`)."""

    connection: Any
    commands: Sequence[Command]
    packed: list[bytes]
    #: The connection error the write met, if any: :meth:`DirectRedis.receive` runs the round trip again.
    error: Exception | None = None


class RoundTrips(abc.ABC):
    """What the broker's hot path needs of a Redis: batches of commands, one round trip each
    (per server), replies in order. :class:`DirectRedis` on one Redis,
    :class:`~pipeline.streams.cluster.ClusterDirectRedis` on a cluster."""

    def execute(self, *args: Any) -> Any:
        """Run one command and return its reply; an error reply is raised."""
        reply = self.execute_many([args])[0]
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    @abc.abstractmethod
    def execute_many(self, commands: Sequence[Command], scripts: Mapping[str, Script] | None = None) -> list[Any]:
        """Run ``commands``; their replies in order, error replies as exception values."""

    @abc.abstractmethod
    def close(self) -> None:
        """Disconnect the idle connections."""


class DirectRedis(RoundTrips):
    """Round trips on dedicated connections made like ``client``'s (see the module docstring)."""

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        self._connection_class = pool.connection_class
        self._connection_kwargs = dict(pool.connection_kwargs)
        self._read_timeout: float = self._connection_kwargs.get("socket_timeout") or READ_TIMEOUT_S
        self._connection_kwargs["socket_timeout"] = self._read_timeout
        #: Whether the connections are a Sentinel pool's, whose master may change (:func:`_left_behind`).
        self._follows_master = "connection_pool" in self._connection_kwargs
        #: Whether the connections pack with hiredis (known once the first is made; all are made alike).
        self._hiredis_packs = False
        self._idle: list[Any] = []
        self._generation = forks.generation()
        #: The client's retry policy, taken from its first connection (which gets :data:`_ONE_ATTEMPT`).
        self._retry: Retry | None = None

    def execute_many(self, commands: Sequence[Command], scripts: Mapping[str, Script] | None = None) -> list[Any]:
        """Run ``commands`` in one round trip; their replies in order, error replies as exception values.

        ``scripts`` maps the SHA of every script an ``EVALSHA`` of ``commands`` names to the
        script, so that a Redis that lost its script cache gets it again.
        """
        connection = self._take()
        try:
            packed = self._pack(connection, commands)
            try:
                self._write(connection, packed)
            except Exception as error:  # the retry policy decides: _finish raises it in its first attempt
                if isinstance(error, TRANSIENT_ERRORS):
                    connection.disconnect()  # as send() does: never reused half-written
                return self._finish(connection, commands, packed, scripts, error)
            return self._finish(connection, commands, packed, scripts)
        finally:
            self._give_back(connection)

    def send(self, commands: Sequence[Command]) -> InFlight:
        """Write ``commands`` and return without reading their replies: :meth:`receive` reads them.

        A caller with several servers (:class:`~pipeline.streams.cluster.ClusterDirectRedis`) sends
        to each before reading any, so their round trips overlap. A connection error is kept for
        :meth:`receive`, which then runs the round trip again under the retry policy.
        """
        connection = self._take()
        try:
            flight = InFlight(connection, commands, self._pack(connection, commands))
        except BaseException:
            self._give_back(connection)
            raise
        try:
            self._write(connection, flight.packed)
        except TRANSIENT_ERRORS as error:
            connection.disconnect()
            flight.error = error
        except BaseException:
            self._give_back(connection)
            raise
        return flight

    def receive(self, flight: InFlight, scripts: Mapping[str, Script] | None = None) -> list[Any]:
        """The replies of a :meth:`send`, in order, error replies as exception values (see :meth:`execute_many`)."""
        try:
            return self._finish(flight.connection, flight.commands, flight.packed, scripts, flight.error)
        finally:
            self._give_back(flight.connection)

    def _finish(
        self,
        connection: Any,
        commands: Sequence[Command],
        packed: list[bytes],
        scripts: Mapping[str, Script] | None,
        error: Exception | None = None,
    ) -> list[Any]:
        """The replies of ``commands``, written to ``connection`` (``error``: what the write met).

        The first attempt is that write and a read, outside the retry policy (a send pays for no
        closure and no policy); when it fails, the policy takes over with that failure as its own
        first, so the attempts, the backoff and the errors retried are the policy's, as before.
        """
        blocked_s = _blocking_s(commands)
        timeout = self._read_timeout + blocked_s if blocked_s else None  # None: the socket's own
        try:
            if error is not None:
                raise error
            replies = self._read(connection, len(commands), timeout)
        except Exception as first:
            replies = self._retried(connection, packed, len(commands), timeout, first)
        if scripts:
            missing = [index for index, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                self._load_missing(connection, commands, replies, missing, scripts)
        return replies

    def _retried(
        self, connection: Any, packed: list[bytes], count: int, timeout: float | None, first: Exception
    ) -> list[Any]:
        """The round trip under the retry policy, whose first attempt is the one that failed with ``first``."""
        assert self._retry is not None
        failed = [first]

        def attempt() -> list[Any]:
            if failed:
                raise failed.pop()
            return self._round_trip(connection, packed, count, timeout)

        return self._retry.call_with_retry(attempt, lambda _error: connection.disconnect())

    def _load_missing(
        self,
        connection: Any,
        commands: Sequence[Command],
        replies: list[Any],
        missing: list[int],
        scripts: Mapping[str, Script],
    ) -> None:
        """Load the scripts Redis forgot and run their commands again (with a ``WAIT`` that ends the
        batch, which must follow every write it confirms), their replies put in ``replies``."""
        for sha in {str(commands[index][1]) for index in missing}:
            connection.send_command("SCRIPT", "LOAD", scripts[sha].script)
            connection.read_response()
        missing += trailing_wait(commands)
        again = [commands[index] for index in missing]
        for index, reply in zip(
            missing, self._round_trip(connection, self._pack(connection, again), len(again)), strict=True
        ):
            replies[index] = reply

    def abandon(self, flight: InFlight) -> None:
        """Give up a :meth:`send` whose replies will not be read: its connection is out of step, so disconnected."""
        flight.connection.disconnect()
        self._give_back(flight.connection)

    def close(self) -> None:
        """Disconnect the idle connections (one in use is disconnected when garbage-collected)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.disconnect()

    def _pack(self, connection: Any, commands: Sequence[Command]) -> list[bytes]:
        """RESP for ``commands``: hiredis's packer straight away when the connection uses it (our
        commands are one-word names with str, bytes and int arguments), else the connection's."""
        if self._hiredis_packs:
            if len(commands) == 1:
                return [hiredis.pack_command(tuple(commands[0]))]
            return [b"".join([hiredis.pack_command(tuple(command)) for command in commands])]
        return connection.pack_commands(commands)

    @classmethod
    def _round_trip(cls, connection: Any, packed: list[bytes], count: int, timeout: float | None = None) -> list[Any]:
        cls._write(connection, packed)
        return cls._read(connection, count, timeout)

    @staticmethod
    def _write(connection: Any, packed: list[bytes]) -> None:
        if connection._sock is None:
            connection.connect()  # where the client's pool would connect (see the module docstring)
        connection.send_packed_command(packed)

    @staticmethod
    def _read(connection: Any, count: int, timeout: float | None = None) -> list[Any]:
        if count == 1 and timeout is None:  # a send: one reply, read as the loop below would
            try:
                return [connection.read_response()]
            except ResponseError as error:
                return [error]
        replies: list[Any] = []
        parser = _buffered_replies(connection)
        read = {} if timeout is None else {"timeout": timeout}
        for _ in range(count):
            if replies and parser is not None:  # the rest of a batch mostly came with its first reply
                reply = _checked(parser, parser._reader.gets())
                if reply is not _NOT_ENOUGH_DATA:
                    replies.append(reply)
                    continue
            try:
                replies.append(connection.read_response(**read))
            except ResponseError as error:  # an error reply, read whole: the connection is still in step
                replies.append(error)
        return replies

    def _take(self) -> Any:
        if self._generation != forks.generation():
            self._idle, self._generation = [], forks.generation()  # a forked child: those sockets are the parent's
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = self._connection_class(**self._connection_kwargs)
            if self._retry is None:
                self._retry = connection.retry  # the client's policy, its retryable errors included
                self._hiredis_packs = isinstance(connection._command_packer, HiredisRespSerializer)
            connection.retry = Retry(NoBackoff(), 0)  # see the module docstring: the round trip retries
            return connection
        if self._follows_master and _left_behind(connection):
            connection.disconnect()  # the next round trip connects to the master the sentinels name now
        return connection

    def _give_back(self, connection: Any) -> None:
        if self._generation == forks.generation():
            self._idle.append(connection)


def trailing_wait(commands: Sequence[Command]) -> list[int]:
    """The position of the ``WAIT`` that ends ``commands`` (:mod:`pipeline.streams.durability`), if one does."""
    last = commands[-1][0] if commands else b""
    return [len(commands) - 1] if (last.decode() if isinstance(last, bytes) else str(last)).upper() == "WAIT" else []


def _blocking_s(commands: Sequence[Command]) -> float:
    """The seconds ``commands`` may ask Redis to block, all told (0 for most batches)."""
    total_ms = 0
    for command in commands:
        where = _BLOCKING.get(command[0]) if isinstance(command[0], str) else None
        if where is None:
            continue
        if isinstance(where, str):
            names = [item.upper() if isinstance(item, str) else item for item in command]
            position = names.index(where) + 1 if where in names else None
        else:
            position = where
        if position is not None and position < len(command):
            total_ms += int(command[position])
    return total_ms / 1000


def _left_behind(connection: Any) -> bool:
    """Whether ``connection`` is open to a server that its Sentinel pool no longer names as the
    master (``master_address`` is what the last connect of any of the client's connections learned)."""
    pool = getattr(connection, "connection_pool", None)
    master = getattr(pool, "master_address", None)
    return (
        master is not None
        and getattr(pool, "is_master", False)
        and connection._sock is not None
        and (connection.host, connection.port) != tuple(master)
    )


def _buffered_replies(connection: Any) -> Any:
    """The hiredis parser of ``connection`` when replies may be taken from its reader directly, else ``None``.

    redis-py wraps each reply it reads (the host's name formatted for its errors, the protocol
    looked up, the health check's clock): a batch of 64 copies paid that 64 times. Replies already
    received are taken from the reader itself; the first of a batch, and any not arrived yet, are
    read by redis-py (its socket reads, timeouts and error handling).
    """
    parser = connection._parser
    return parser if type(parser) is _HiredisParser and parser._reader is not None else None


def _checked(parser: Any, reply: Any) -> Any:
    """A reply taken from the reader, as redis-py's ``read_response`` returns it: an error reply is a
    value (the caller's), a connection error (the server is loading, ...) is raised, and a RESP3 push
    message goes to redis-py's handler (:data:`_NOT_ENOUGH_DATA`: the reply is still to be read)."""
    if isinstance(reply, RedisConnectionError):
        raise reply
    if isinstance(reply, list) and reply and isinstance(reply[0], RedisConnectionError):
        raise reply[0]
    push = parser._hiredis_PushNotificationType
    if push is not None and isinstance(reply, push):
        parser.handle_push_response(reply)
        return _NOT_ENOUGH_DATA
    return reply
