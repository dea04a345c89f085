"""Durable writes: a publish or an ack that returns only once a replica has it too.

Redis replicates asynchronously: a primary answers a write at once and sends it
to its replicas afterwards, so a primary that dies in between takes the write
with it, and the replica promoted in its place never saw it, though the client
was told it was done. ``WAIT numreplicas timeout`` closes that gap for the
writes made before it on the same connection: it answers once that many
replicas confirmed them, or when the timeout ends, with how many did.

:class:`Durability` says what a write of the broker's hot path waits for
(``FRAMEFLOW_DURABILITY``, the ``durability`` option of producers, processors and
the broker): ``primary``, nothing more (the default: no cost); ``replicated``, one
replica, for at most ``FRAMEFLOW_REPLICA_TIMEOUT_MS``. :class:`ConfirmedRoundTrips`
applies it: each batch of commands gets a ``WAIT`` at its end, in the same round
trip (on a Redis Cluster, one per master the batch wrote to:
:mod:`pipeline.streams.cluster`), and a batch that too few replicas confirmed
raises :class:`~pipeline.errors.NotReplicated`. The broker sends through it what
must last: a send's ``XADD``, the router's copies (a producer's ``publish``), the
results written with an ack batch and the ``XACK`` + ``XDEL`` themselves
(:mod:`pipeline.streams.acks`); reads, leases and housekeeping go as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from redis.commands.core import Script

from pipeline.errors import NotReplicated
from pipeline.settings import DURABILITIES, Settings

from .direct import Command, RoundTrips


@dataclasses.dataclass(frozen=True)
class Durability:
    """How many replicas confirm a write before it counts as done, and how long to wait for them.

    Attributes:
      replicas: 0 (``primary``: the primary's reply is enough) or more (``replicated``: 1).
      timeout_ms: how long a write waits for its replicas (``WAIT``'s timeout), at least 1.
    """

    replicas: int = 0
    timeout_ms: int = Settings.replica_timeout_ms

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ValueError("replicas must be 0 or more")
        if self.timeout_ms < 1:
            raise ValueError("the replica timeout must be 1 ms or more (WAIT 0 would wait for ever)")

    @classmethod
    def chosen(
        cls, name: str | None = None, timeout_ms: int | None = None, settings: Settings | None = None
    ) -> Durability:
        """``name`` (one of :data:`~pipeline.settings.DURABILITIES`) with ``timeout_ms``; either left out
        is taken from the environment (``FRAMEFLOW_DURABILITY``, ``FRAMEFLOW_REPLICA_TIMEOUT_MS``).

        Raises:
          ValueError: an unknown name or a timeout under 1 ms.
        """
        settings = settings or Settings.from_env()
        name = settings.durability if name is None else name
        if name not in DURABILITIES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITIES)}, not {name!r}")
        timeout = settings.replica_timeout_ms if timeout_ms is None else timeout_ms
        return cls(replicas=DURABILITIES[name], timeout_ms=timeout)

    @property
    def waits(self) -> bool:
        """Whether a write waits for replicas at all."""
        return self.replicas > 0

    def wait_command(self) -> Command:
        """The ``WAIT`` that ends a batch of writes."""
        return ("WAIT", self.replicas, self.timeout_ms)

    def confirm(self, reply: Any, replies: list[Any]) -> None:
        """Raise :class:`~pipeline.errors.NotReplicated` unless ``reply`` (the ``WAIT``'s, after
        ``replies``) says enough replicas confirmed the batch."""
        if isinstance(reply, Exception):
            raise NotReplicated(f"the replicas' confirmation could not be asked for ({reply})", replies)
        if int(reply) < self.replicas:
            raise NotReplicated(
                f"{int(reply)} of {self.replicas} replica(s) confirmed the write within {self.timeout_ms} ms: "
                "it is on the primary only, and a failover may lose it",
                replies,
            )


class ConfirmedRoundTrips(RoundTrips):
    """``inner``'s round trips, each ended by ``durability``'s ``WAIT`` and checked (see the module docstring)."""

    def __init__(self, inner: RoundTrips, durability: Durability) -> None:
        self.inner = inner
        self.durability = durability

    def execute_many(self, commands: Sequence[Command], scripts: Mapping[str, Script] | None = None) -> list[Any]:
        """Run ``commands`` and their ``WAIT`` in one round trip (per master); their replies in order.

        Raises:
          NotReplicated: fewer replicas than asked for confirmed them in time (its ``replies`` are theirs).
        """
        if not commands:
            return []
        replies = self.inner.execute_many([*commands, self.durability.wait_command()], scripts)
        waited = replies.pop()
        self.durability.confirm(waited, replies)
        return replies

    def close(self) -> None:
        self.inner.close()


def confirmed(round_trips: RoundTrips, durability: Durability) -> RoundTrips:
    """``round_trips`` whose batches wait for ``durability``'s replicas; ``round_trips`` itself when
    it asks for none, so the default path costs nothing."""
    return ConfirmedRoundTrips(round_trips, durability) if durability.waits else round_trips
