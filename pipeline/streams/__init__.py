"""The broker core: a Dramatiq broker on Redis Streams. It knows nothing of frames, cameras or capabilities.

Importable and testable alone (``scripts/dramatiq_suite.py`` runs Dramatiq's own test suite on it
without loading anything above it). One module, one mechanism:

* :mod:`.broker` — :class:`RedisStreamsBroker`: queues as streams, join, close; :mod:`.sending` — its enqueue;
* :mod:`.consumer` — reading a queue (``XREADGROUP``), ack and nack;
* :mod:`.leases` — how long a delivered message stays reserved, and its renewal;
* :mod:`.acks` — acknowledgements written in batches, with the writes that go with them;
* :mod:`.dead_letters` and :mod:`.failures` — dead letters, and ``join(fail_fast=True)``'s memory;
* :mod:`.dispatch` — the one extension point for deciding where a message goes (routing fills it);
* :mod:`.wire` and :mod:`.keys` — a message as a stream entry, and every key of a queue;
* :mod:`.direct`, :mod:`.cluster`, :mod:`.connection` — the hot path's connections, Redis Cluster
  and Sentinel URLs; :mod:`.embedded` — the embedded Redis; :mod:`.lua` — the scripts in ``scripts/``;
* :mod:`.shared_redis`, :mod:`.runtime_files`, :mod:`.redis_watchdog` — the Redis of a process with none
  configured: localhost:6379, else one embedded Redis shared by the machine's processes.
"""

from .broker import RedisStreamsBroker
from .connection import connect
from .dead_letters import DeadLetter, DeadLetterQueue
from .embedded import EmbeddedRedis

__all__ = ["DeadLetter", "DeadLetterQueue", "EmbeddedRedis", "RedisStreamsBroker", "connect"]
