"""``frameflow ingest``: the original system's frame stream, routed to frameflow's processors.

A migrating deployment keeps its capture service, which writes ``frames:metadata``.
:class:`FrameIngest` reads that stream with a consumer group and hands each entry to
``FrameProducer.publish`` (:mod:`pipeline.ingest.mapping` says how). An entry is acknowledged
only once routed (written to its processors' queues, or parked for a capability no live
processor offers yet: either way in frameflow's keeping). One that cannot become a frame is
dead-lettered with the reason, counted, logged in one line, and acknowledged: the process
never stops for an entry. Redis being unreachable is waited out; the entries taken and not
acknowledged are read again (this consumer's pending entries first).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

import redis

from pipeline.domain.frames import FrameRejected
from pipeline.domain.keys import ingest_counts_key
from pipeline.processes.producer import FrameProducer

from .mapping import IngestConfig, Unmappable, map_entry

logger = logging.getLogger(__name__)

#: Entries read per round trip, and how long one read waits for new entries.
READ_COUNT = 16
BLOCK_MS = 1000

#: Dead letters kept (about; the oldest go first).
DEAD_LETTERS_MAXLEN = 10_000


class FrameIngest:
    """Reads ``config.stream`` through ``config.group`` and publishes each entry as a frame.

    Parameters:
      client: the Redis holding the original stream (and frameflow's queues).
      producer: publishes the frames.
      config: the stream, group and mapping.
      namespace: frameflow's key prefix (for the counts).
    """

    def __init__(
        self, client: redis.Redis, producer: FrameProducer, config: IngestConfig, namespace: str = "frameflow"
    ) -> None:
        self.client = client
        self.producer = producer
        self.config = config
        self.counts_key = ingest_counts_key(namespace, config.stream)
        #: What this process did, by outcome (``routed``, ``parked``) and dead-letter kind.
        self.counts: Counter[str] = Counter()

    def run(self, stop: threading.Event) -> None:
        """Ingest until ``stop`` is set; Redis outages are waited out with backoff."""
        logger.info(
            "Ingesting %s (group %s, consumer %s); dead letters to %s.",
            self.config.stream,
            self.config.group,
            self.config.consumer,
            self.config.dead_letters,
        )
        backoff = 0.1
        while not stop.is_set():
            try:
                self._ensure_group()
                self._drain(stop, "0")  # entries taken before a restart or an outage, not yet acknowledged
                while not stop.is_set():
                    self._drain(stop, ">")
                    backoff = 0.1
            except redis.RedisError as error:  # unreachable, out of memory, read-only replica: wait it out
                logger.warning("Redis refused or unreachable while ingesting (retrying in %.1f s): %s", backoff, error)
                stop.wait(backoff)
                backoff = min(5.0, backoff * 2)

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.config.stream, self.config.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _drain(self, stop: threading.Event, cursor: str) -> None:
        """Handle what one read returns; for our pending entries (``cursor`` ``"0"``), until none is left."""
        while not stop.is_set():
            reply = self.client.xreadgroup(
                self.config.group,
                self.config.consumer,
                {self.config.stream: cursor},
                count=READ_COUNT,
                block=BLOCK_MS if cursor == ">" else None,
            )
            entries = reply[0][1] if reply else []
            for entry_id, fields in entries:
                self.handle(entry_id, fields)
            if cursor == ">" or not entries:
                return

    def handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> str:
        """Publish one entry, or dead-letter it; acknowledge it either way. Returns the outcome."""
        if not fields:  # a pending entry deleted since (the capture service trims its stream)
            self.client.xack(self.config.stream, self.config.group, entry_id)
            return "gone"
        try:
            spec = map_entry(fields, self.config, self._read_key)
            decision = self.producer.publish(**spec)
        except Unmappable as refusal:
            return self._dead_letter(entry_id, fields, refusal.kind, str(refusal))
        except FrameRejected as rejection:
            return self._dead_letter(entry_id, fields, "bad_frame", str(rejection))
        except redis.RedisError:
            raise  # not acknowledged: read again once Redis answers
        except Exception as error:  # a bug of ours must not stop the stream: keep the entry, say why
            logger.debug("Unexpected error ingesting %s", entry_id, exc_info=error)
            return self._dead_letter(entry_id, fields, "unexpected", f"{type(error).__name__}: {error}")
        outcome = "routed" if decision.targets else "parked"
        pipe = self.client.pipeline(transaction=False)  # several keys: no one slot on a cluster
        pipe.xack(self.config.stream, self.config.group, entry_id)
        pipe.hincrby(self.counts_key, outcome, 1)
        pipe.execute()
        self.counts[outcome] += 1
        return outcome

    def _read_key(self, key: str) -> bytes | None:
        try:
            value: Any = self.client.get(key)
        except redis.ResponseError as error:  # WRONGTYPE: the key holds no string
            raise Unmappable("bad_image_reference", f"bad image reference: Redis key {key[:80]!r}: {error}") from None
        return value if isinstance(value, bytes) else None

    def _dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes], kind: str, reason: str) -> str:
        source_id = entry_id.decode()
        logger.warning("Dead-lettered entry %s of %s: %s.", source_id, self.config.stream, reason)
        letter = {
            **fields,
            b"ingest_reason": reason.encode(),
            b"ingest_kind": kind.encode(),
            b"source_stream": self.config.stream.encode(),
            b"source_id": entry_id,
        }
        pipe = self.client.pipeline(transaction=False)  # several keys: no one slot on a cluster
        pipe.xadd(self.config.dead_letters, letter, maxlen=DEAD_LETTERS_MAXLEN, approximate=True)  # type: ignore[arg-type]
        pipe.xack(self.config.stream, self.config.group, entry_id)
        pipe.hincrby(self.counts_key, "dead_lettered", 1)
        pipe.hincrby(self.counts_key, f"dead_lettered:{kind}", 1)
        pipe.execute()
        self.counts[f"dead_lettered:{kind}"] += 1
        return "dead_lettered"
