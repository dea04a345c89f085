"""The hot path on a Redis Cluster: :class:`~pipeline.streams.direct.DirectRedis`'s interface, one per master.

A batch of the broker's commands (a router's copies to several processor
queues, the result entries written with an ack batch) touches keys of many
slots, so on a cluster it is split by the master that owns each key's slot, as
redis-py's slot map says (:meth:`RedisCluster.keyslot`,
``nodes_manager.get_node_from_slot``). Each master gets its part in one round
trip on a :class:`~pipeline.streams.direct.DirectRedis` of its own, and the replies are
put back in the caller's order. The round trips overlap: every master's part is
written before any reply is read (:meth:`DirectRedis.send`, then :meth:`DirectRedis.receive`,
one connection per master, no threads), so a batch over three masters costs about
one round trip of waiting, not three. A ``MULTI`` ... ``EXEC`` block travels whole:
frameflow's transactions touch one slot (see :mod:`pipeline.streams.keys`).

What a cluster answers besides the reply:

* ``MOVED`` (the slot lives elsewhere now): the slot map is patched (or
  refreshed) and the command sent again to the new owner;
* ``ASK`` (the slot is being migrated and this key already moved): the command
  is sent to the importing master after ``ASKING``;
* ``TRYAGAIN`` / ``CLUSTERDOWN`` (a migration or a failover in progress), and a
  connection error (the slot map is refreshed first): sent again after a backoff.

A command still refused after :data:`ATTEMPTS` tries gets its last error reply,
as any error reply: an exception value in its place.

A ``WAIT`` that ends a batch (:mod:`pipeline.streams.durability`) confirms the writes
before it on its own connection only, so it is sent to every master the batch
goes to, at the end of that master's round trip, and its reply is the least of
theirs (Redis's own ``agg_min`` policy for ``WAIT``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.exceptions import AskError, ClusterDownError, MovedError, RedisClusterException, TryAgainError

from .connection import TRANSIENT_ERRORS
from .direct import Command, DirectRedis, InFlight, RoundTrips, trailing_wait

#: How many times one command is sent before its error reply is returned (redirects included).
ATTEMPTS = 8

#: Backoff after TRYAGAIN, CLUSTERDOWN or a connection error: first and longest wait, in seconds.
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.02, 1.0

#: Commands whose keys follow ``STREAMS``: redis-py would ask the server for their keys.
_STREAM_READS = {"XREAD", "XREADGROUP"}


class _Unit(NamedTuple):
    """Commands that go to one master together: a single command, or a whole MULTI ... EXEC block."""

    positions: range
    ask: tuple[str, int] | None = None


@dataclasses.dataclass
class _Sent:
    """One master's units, written to it, their replies not read yet."""

    units: list[_Unit]
    direct: DirectRedis
    flight: InFlight
    read: bool = False
    #: Whether the batch ends with the caller's ``WAIT``; its reply, once read.
    confirms: bool = False
    waited: Any = None

    def replies(self, scripts: Mapping[str, Script] | None) -> list[list[Any]]:
        """Read the master's replies, per unit (the ``ASKING`` replies left out); a connection
        error raised here has already been retried on this master (:meth:`DirectRedis.receive`)."""
        self.read = True
        flat = self.direct.receive(self.flight, scripts)
        if self.confirms:
            self.waited = flat.pop()
        per_unit, cursor = [], 0
        for unit in self.units:
            cursor += 1 if unit.ask is not None else 0
            per_unit.append(flat[cursor : cursor + len(unit.positions)])
            cursor += len(unit.positions)
        return per_unit

    def abandon(self) -> None:
        """Disconnect the connection if its replies were never read (it is out of step)."""
        if not self.read:
            self.read = True
            self.direct.abandon(self.flight)


class ClusterDirectRedis(RoundTrips):
    """Hot-path round trips on a Redis Cluster, one :class:`DirectRedis` per master (see the module docstring)."""

    def __init__(self, client: RedisCluster) -> None:
        self.client = client
        self._masters: dict[str, DirectRedis] = {}
        self._lock = threading.Lock()

    def execute_many(self, commands: Sequence[Command], scripts: Mapping[str, Script] | None = None) -> list[Any]:
        """Run ``commands``, one round trip per master; their replies in order, error replies as values."""
        confirm = commands[-1] if len(commands) > 1 and trailing_wait(commands) else None
        commands = commands[:-1] if confirm is not None else commands
        waited: list[Any] = []  # the WAIT's reply from each master's round trip
        replies: list[Any] = [None] * len(commands)
        units = _units(commands)
        backoff = BACKOFF_FIRST_S
        for attempt in range(ATTEMPTS):
            retry: list[_Unit] = []
            wait = False
            sent = self._send_all(commands, units, confirm)
            try:
                for master in sent:
                    try:
                        node_replies = master.replies(scripts)
                    except TRANSIENT_ERRORS:
                        if attempt == ATTEMPTS - 1:
                            raise
                        self.client.nodes_manager.initialize()
                        retry += master.units
                        wait = True
                        continue
                    if master.confirms:
                        waited.append(master.waited)
                    for unit, unit_replies in zip(master.units, node_replies, strict=True):
                        again = self._redirect(unit, unit_replies)
                        if again is None or attempt == ATTEMPTS - 1:
                            replies[unit.positions.start : unit.positions.stop] = unit_replies
                        else:
                            retry.append(again)
                            wait = wait or (again.ask is None and not _moved(unit_replies))
            finally:
                for master in sent:
                    master.abandon()  # those an error left unread
            if not retry:
                break
            units = retry
            if wait:
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
        if confirm is not None:
            replies.append(next((reply for reply in waited if isinstance(reply, Exception)), min(waited)))
        return replies

    def close(self) -> None:
        """Disconnect the idle connections of every master."""
        with self._lock:
            masters, self._masters = list(self._masters.values()), {}
        for direct in masters:
            direct.close()

    # -- routing ---------------------------------------------------------------------------
    def _by_master(self, commands: Sequence[Command], units: list[_Unit]) -> dict[ClusterNode, list[_Unit]]:
        grouped: dict[ClusterNode, list[_Unit]] = {}
        nodes = self.client.nodes_manager
        for unit in units:
            if unit.ask is not None:
                node = nodes.get_node(host=unit.ask[0], port=unit.ask[1]) or ClusterNode(*unit.ask)
            else:
                slot = self._slot_of(commands, unit)
                node = self.client.get_default_node() if slot is None else nodes.get_node_from_slot(slot)
            grouped.setdefault(node, []).append(unit)
        return grouped

    def _slot_of(self, commands: Sequence[Command], unit: _Unit) -> int | None:
        """The slot of the unit's first command that names a key (None: any master will do)."""
        for position in unit.positions:
            slot = self._slot(commands[position])
            if slot is not None:
                return slot
        return None

    def _slot(self, command: Command) -> int | None:
        name = _text(command[0]).upper()
        if name in _STREAM_READS:
            upper = [_text(item).upper() if isinstance(item, str | bytes) else "" for item in command]
            return self.client.keyslot(command[upper.index("STREAMS") + 1])
        if name in ("MULTI", "EXEC", "PING"):
            return None
        try:
            return self.client.determine_slot(*command)
        except RedisClusterException:
            return None  # a command without keys

    # -- the masters' round trips, together ------------------------------------------------
    def _send_all(self, commands: Sequence[Command], units: list[_Unit], confirm: Command | None) -> list[_Sent]:
        """Send every master its units (then ``confirm``, a ``WAIT``, when given) before reading any
        reply, so that the round trips overlap."""
        sent: list[_Sent] = []
        try:
            for node, node_units in self._by_master(commands, units).items():
                direct = self._master(node)
                batch = _batch(commands, node_units)
                flight = direct.send([*batch, confirm] if confirm is not None else batch)
                sent.append(_Sent(node_units, direct, flight, confirms=confirm is not None))
        except BaseException:
            for master in sent:
                master.abandon()
            raise
        return sent

    def _master(self, node: ClusterNode) -> DirectRedis:
        with self._lock:
            direct = self._masters.get(node.name)
            if direct is None:
                direct = self._masters[node.name] = DirectRedis(self.client.get_redis_connection(node))
            return direct

    def _redirect(self, unit: _Unit, replies: list[Any]) -> _Unit | None:
        """The unit to send again (to the importing master after ASK), or None when it is done."""
        errors = [reply for reply in replies if isinstance(reply, AskError | TryAgainError | ClusterDownError)]
        if not errors:
            return None
        first = errors[0]
        if isinstance(first, MovedError):
            self.client.nodes_manager.move_slot(first)
            return _Unit(unit.positions)
        if isinstance(first, AskError) and len(unit.positions) == 1:
            return _Unit(unit.positions, ask=(first.host, int(first.port)))
        if isinstance(first, ClusterDownError):
            self.client.nodes_manager.initialize()
        return _Unit(unit.positions)  # TRYAGAIN, CLUSTERDOWN, or ASK inside a transaction: after a pause


def _batch(commands: Sequence[Command], units: list[_Unit]) -> list[Command]:
    """The commands of ``units`` for one master, an ``ASKING`` before each unit redirected by ``ASK``."""
    batch: list[Command] = []
    for unit in units:
        if unit.ask is not None:
            batch.append(("ASKING",))
        batch += [commands[position] for position in unit.positions]
    return batch


def _units(commands: Sequence[Command]) -> list[_Unit]:
    units, start = [], None
    for position, command in enumerate(commands):
        name = _text(command[0]).upper()
        if name == "MULTI":
            start = position
        elif start is not None:
            if name == "EXEC" or name == "DISCARD":
                units.append(_Unit(range(start, position + 1)))
                start = None
        else:
            units.append(_Unit(range(position, position + 1)))
    if start is not None:
        units.append(_Unit(range(start, len(commands))))
    return units


def _moved(replies: list[Any]) -> bool:
    return any(isinstance(reply, MovedError) for reply in replies)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
