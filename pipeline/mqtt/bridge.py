"""The bridge's loop: result streams in (one consumer group), MQTT messages out, acks last.

Each pass reads a batch of result entries (``XREADGROUP``; on start, first this consumer's own
pending entries, i.e. what a previous run left unacknowledged), turns them into observations
(:mod:`.mapping`), feeds the tracker (:mod:`.tracks`) and publishes what changed (events, counts,
snapshots, discovery). The entries the ledger (:mod:`.ledger`) frees are acknowledged once the
broker acknowledged every publish up to the batch's last (:meth:`Publisher.confirmed_through`).
The bridge goes on reading meanwhile, up to :data:`MAX_UNCONFIRMED` publishes in flight: waiting
for each batch to be confirmed before reading the next drained the connection every time and cost
about 40 ms per batch on loopback (0.3 of a bare paho loop's rate instead of 0.7). While the broker
is away nothing new is read: the results wait in Redis (the ``backlog`` metric) and paho re-sends
what was in flight once it is back. Tracks end by silence only while the bridge is caught up (a
read returned less than a full batch), so a backlog is replayed by the frames' own times.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict, deque
from typing import Any

import redis

from pipeline.domain.kept_images import read_kept_image
from pipeline.domain.results import result_problem

from .client import Publisher
from .discovery import configs
from .errors import BadResult
from .ledger import AckLedger, EntryRef
from .mapping import ResultMapping
from .metrics import BridgeMetrics
from .settings import MqttSettings
from .snapshots import render
from .topics import Topics
from .tracks import Observation, Tracker, TrackEvent, TrackKey

logger = logging.getLogger(__name__)

#: Entries per read; a read that returns fewer means the bridge is caught up.
BATCH = 100
#: How long a read blocks when caught up (also how often silent tracks are checked).
BLOCK_MS = 100
#: Publishes awaiting the broker's acknowledgement at most before the bridge stops reading.
MAX_UNCONFIRMED = 2000


class Bridge:
    """Parameters:
    client: the Redis client.
    settings: the MQTT side (:class:`MqttSettings`).
    mapping: which results become detections.
    namespace: frameflow's key namespace (where kept images live).
    from_beginning: create the consumer group at the start of each stream, not at its end.
    """

    def __init__(
        self,
        client: redis.Redis,
        settings: MqttSettings,
        mapping: ResultMapping,
        *,
        namespace: str = "frameflow",
        from_beginning: bool = False,
    ) -> None:
        self.client = client
        self.settings = settings
        self.mapping = mapping
        self.namespace = namespace
        self.from_beginning = from_beginning
        self.topics = Topics(settings.prefix)
        self.tracker = Tracker(settings.gap_s)
        self.ledger = AckLedger()
        self.metrics = BridgeMetrics(self.backlog)
        self.publisher = Publisher(
            settings.url, settings.client_id, self.topics, self.metrics, on_connect=self._connected
        )
        self.stopping = threading.Event()
        self._connects = 0
        self._republish = threading.Event()
        self._announced: set[TrackKey] = set()
        self._snapshots: dict[TrackKey, bytes] = {}
        #: Entries freed by a batch, waiting until the broker acknowledged its publishes: (last publish, entries).
        self._unconfirmed: deque[tuple[int, list[EntryRef]]] = deque()

    # -- running -------------------------------------------------------------------------------
    def run(self) -> None:
        """Connect and bridge until :meth:`stop`; live tracks' latest entries stay pending for the next run."""
        self._create_groups()
        self.publisher.connect(self.settings.wait_for_mqtt_s, self.stopping)
        logger.info(
            "Bridging %s to %s (group %s, consumer %s).",
            ", ".join(self.mapping.streams),
            self.settings.url.masked,
            self.settings.group,
            self.settings.consumer,
        )
        cursors = dict.fromkeys(self.mapping.streams, "0")  # our own pending entries first
        try:
            while not self.stopping.is_set():
                if not self.publisher.wait_connected(0.5):
                    continue  # nothing is read while the broker is away: the backlog waits in Redis
                if self._republish.is_set():
                    self._republish.clear()
                    self._republish_state()
                entries, full = self._read(cursors)
                if entries:
                    self._handle(entries)
                if not full and all(cursor == ">" for cursor in cursors.values()):
                    self._expire()
                self._ack_confirmed()
        finally:
            if self.publisher.connected and self.publisher.flush(timeout=5.0):
                self._ack_confirmed()  # a clean stop leaves only the live tracks' latest entries pending
            self.publisher.close()  # offline, retained (a kill leaves that to the Last Will)

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler)."""
        self.stopping.set()

    def _create_groups(self) -> None:
        for stream in self.mapping.streams:
            try:
                self.client.xgroup_create(
                    stream, self.settings.group, id="0" if self.from_beginning else "$", mkstream=True
                )
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    def _read(self, cursors: dict[str, str]) -> tuple[list[tuple[str, str, dict[bytes, bytes]]], bool]:
        """One ``XREADGROUP`` over every stream; (entries, whether the read was a full batch)."""
        history = any(cursor != ">" for cursor in cursors.values())
        response = self.client.xreadgroup(
            self.settings.group,
            self.settings.consumer,
            dict(cursors),
            count=BATCH,
            block=None if history else (10 if self._unconfirmed else BLOCK_MS),  # acks due soon: look again soon
        )
        entries = []
        returned: dict[str, int] = {}
        for raw_stream, stream_entries in response or []:
            stream = raw_stream.decode() if isinstance(raw_stream, bytes) else raw_stream
            returned[stream] = len(stream_entries)
            for raw_id, fields in stream_entries:
                entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                entries.append((stream, entry_id, fields or {}))
                if cursors[stream] != ">":
                    cursors[stream] = entry_id
        for stream, cursor in cursors.items():
            if cursor != ">" and not returned.get(stream):
                cursors[stream] = ">"  # no pending entries of ours left there: new ones from now on
        return entries, any(count >= BATCH for count in returned.values())

    # -- one batch -----------------------------------------------------------------------------
    def _handle(self, entries: list[tuple[str, str, dict[bytes, bytes]]]) -> None:
        clock = time.monotonic()
        freed: list[EntryRef] = []
        for stream, entry_id, fields in entries:
            ref = (stream, entry_id)
            self.ledger.begin(ref)
            for observation in self._observations(stream, entry_id, fields):
                key = (observation.camera, observation.label)
                for event in self.tracker.observe(observation, clock):
                    self._publish_event(event, observation)
                    if event.type == "end":
                        freed += self.ledger.end(event.key)
                freed += self.ledger.hold(key, ref)
            freed += self.ledger.finish(ref)
        self._ack_after(freed)

    def _observations(self, stream: str, entry_id: str, fields: dict[bytes, bytes]) -> list[Observation]:
        if not fields:
            return []  # a pending entry trimmed from the stream since: nothing left to bridge
        problem = result_problem(fields)
        if problem is None:
            decoded = {name.decode(): value.decode() for name, value in fields.items()}
            try:
                return self.mapping.observations(stream, decoded)
            except BadResult as error:
                problem = str(error)
        logger.warning("Skipping result %s of %s: %s.", entry_id, stream, problem)
        self.metrics.skipped.labels(problem.split(":")[0][:60]).inc()
        return []

    def _expire(self) -> None:
        events = self.tracker.expire(time.monotonic())
        if not events:
            return
        freed: list[EntryRef] = []
        for event in events:
            self._publish_event(event, None)
            freed += self.ledger.end(event.key)
        self._ack_after(freed)

    def _ack_after(self, freed: list[EntryRef]) -> None:
        """Acknowledge ``freed`` once the broker acknowledged every publish made so far. The bridge
        goes on reading meanwhile (waiting batch by batch would drain the connection each time),
        up to :data:`MAX_UNCONFIRMED` publishes in flight."""
        if freed:
            self._unconfirmed.append((self.publisher.last_sequence, freed))
        self._ack_confirmed()
        self.publisher.wait_below(MAX_UNCONFIRMED, stopping=self.stopping)

    def _ack_confirmed(self) -> None:
        """``XACK`` every entry whose batch's publishes the broker acknowledged."""
        confirmed = self.publisher.confirmed_through()
        by_stream: dict[str, list[str]] = defaultdict(list)
        while self._unconfirmed and self._unconfirmed[0][0] <= confirmed:
            for stream, entry_id in self._unconfirmed.popleft()[1]:
                by_stream[stream].append(entry_id)
        if by_stream:
            pipe = self.client.pipeline(transaction=False)
            for stream, ids in by_stream.items():
                pipe.xack(stream, self.settings.group, *ids)
            pipe.execute()

    # -- what an event publishes -------------------------------------------------------------
    def _publish_event(self, event: TrackEvent, observation: Observation | None) -> None:
        state = event.after
        key = event.key
        if event.type == "new" and key not in self._announced:
            self._announce(key)
        payload: dict[str, Any] = {
            "type": event.type,
            "id": state.id,
            "camera": state.camera,
            "label": state.label,
            "before": event.before.to_json() if event.before is not None else None,
            "after": state.to_json(),
        }
        self.publisher.publish(
            self.topics.events, json.dumps(payload, separators=(",", ":")), kind=f"event:{event.type}"
        )
        if event.count_changed:
            self.publisher.publish(self.topics.count(*key), str(state.count), retain=True, kind="count")
        if event.improved and observation is not None:
            self._publish_snapshot(key, observation)
        if event.type == "end":
            self._snapshots.pop(key, None)

    def _publish_snapshot(self, key: TrackKey, observation: Observation) -> None:
        picture = None
        if observation.snapshot_ref:
            picture = read_kept_image(self.client, self.namespace, observation.snapshot_ref, observation.frame_id)
        if picture is None:
            self.metrics.snapshots_missing.inc()
            return
        jpeg = render(picture, observation.detections)
        self._snapshots[key] = jpeg
        self.publisher.publish(self.topics.snapshot(*key), jpeg, retain=True, kind="snapshot")

    def _announce(self, key: TrackKey) -> None:
        self._announced.add(key)
        if not self.settings.discovery_prefix:
            return
        for topic, config in configs(self.settings.discovery_prefix, self.topics, *key):
            self.publisher.publish(topic, config, retain=True, kind="discovery")

    def _connected(self) -> None:
        self._connects += 1
        if self._connects > 1:
            self._republish.set()  # the broker may have lost its retained messages: the main loop restores them

    def _republish_state(self) -> None:
        """After a reconnect: discovery configs, live counts and snapshots again (retained)."""
        for key in sorted(self._announced):
            self._announced.discard(key)
            self._announce(key)
        for state in self.tracker.active():
            key = (state.camera, state.label)
            self.publisher.publish(self.topics.count(*key), str(state.count), retain=True, kind="count")
            if key in self._snapshots:
                self.publisher.publish(self.topics.snapshot(*key), self._snapshots[key], retain=True, kind="snapshot")

    # -- observability -----------------------------------------------------------------------
    def backlog(self) -> dict[str, int]:
        """Per stream: entries not yet delivered to the group plus those delivered and not acknowledged."""
        backlog = {}
        for stream in self.mapping.streams:
            for group in self.client.xinfo_groups(stream):
                name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
                if name != self.settings.group:
                    continue
                lag = group.get("lag")
                if lag is None:  # Redis 6.2: count what follows the last delivered id (bounded)
                    last = group["last-delivered-id"]
                    last = last.decode() if isinstance(last, bytes) else last
                    lag = len(self.client.xrange(stream, f"({last}", "+", count=100_000))
                backlog[stream] = int(lag) + int(group["pending"])
        return backlog

    def health(self) -> tuple[bool, dict[str, Any]]:
        connected = self.publisher.connected
        return connected, {
            "status": "healthy" if connected else "unhealthy",
            "mqtt": self.settings.url.masked,
            "connected": connected,
            "live_tracks": len(self.tracker),
            "held_entries": self.ledger.held(),
            "in_flight": self.publisher.in_flight(),
        }
