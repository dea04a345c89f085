"""The MQTT connection: paho-mqtt 2 (MQTT 5), QoS 1 publishes confirmed one by one, availability.

:class:`Publisher` connects once (retrying while the broker does not answer; failing at once, in
one line, when it refuses the credentials), then lets paho's network thread reconnect whenever
the connection drops. Every publish is QoS 1 and tracked by its message id until the broker's
PUBACK; :meth:`Publisher.flush` waits for all of them, which is what the bridge waits for before
it acknowledges result entries. A message not yet acknowledged when the connection drops stays in
paho's queue and is sent again after the reconnect. ``<prefix>/available`` is ``online`` (retained)
after every connect and ``offline`` as the Last Will and on a clean stop.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from .errors import MqttError, MqttRefused, MqttUnreachable
from .metrics import BridgeMetrics
from .settings import MqttUrl
from .topics import OFFLINE, ONLINE, Topics

logger = logging.getLogger(__name__)

#: Publishes in flight at most: Mosquitto's Receive Maximum (its ``max_inflight_messages``, 20 by default).
#: paho 2 does not follow the Receive Maximum a broker announces, and a client that sends more is
#: disconnected, so this stays at a value brokers accept; more are queued by paho, not dropped.
MAX_INFLIGHT = 20
#: How long the first CONNACK may take once the socket is open.
CONNACK_TIMEOUT_S = 30.0


class Publisher:
    """One paho client; see the module docstring.

    Parameters:
      url: the broker.
      client_id: the MQTT client id.
      topics: where availability goes.
      metrics: counts messages, reconnects and PUBACK latency.
      on_connect: called (on paho's thread) after every successful connect, the first included.
      availability: publish ``online``/``offline`` and the Last Will (``False`` for a short-lived
        helper connection such as ``--forget``, which must not speak for the bridge).
    """

    def __init__(
        self,
        url: MqttUrl,
        client_id: str,
        topics: Topics,
        metrics: BridgeMetrics | None = None,
        on_connect: Callable[[], None] | None = None,
        *,
        availability: bool = True,
    ) -> None:
        self.url = url
        self.availability = availability
        self.topics = topics
        self.metrics = metrics
        self._on_connect_hook = on_connect
        self._lock = threading.Condition()
        self._pending: dict[int, tuple[int, float, str, str]] = {}  # mid -> (sequence, published at, topic, kind)
        self._sequence = 0  # publishes so far, numbered from 1
        self._wake_at = 0  # flush()/wait_below() want a notify once this few publishes are pending
        self._early: dict[int, Any] = {}  # PUBACKs that came before publish() returned
        self._failures: list[str] = []
        self._connected = False
        self._connections = 0
        self._refusal: str | None = None
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
        if url.username:
            client.username_pw_set(url.username, url.password)
        if url.tls:
            client.tls_set(ca_certs=url.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        if availability:
            client.will_set(topics.available, OFFLINE, qos=1, retain=True)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.reconnect_delay_set(1, 10)
        client.enable_logger(logging.getLogger("paho.mqtt"))  # its packets at DEBUG (flags only, never a password)
        client.on_connect = self._connected_cb
        client.on_disconnect = self._disconnected_cb
        client.on_publish = self._published_cb
        self._client = client

    # -- connecting ----------------------------------------------------------------------------
    def connect(self, wait_s: float = 0.0, stopping: threading.Event | None = None) -> None:
        """Connect, retrying (with backoff) while the broker does not answer, for ``wait_s`` seconds
        at most (0: forever); start paho's network thread.

        Raises:
          MqttRefused: the broker refused the credentials (or this client).
          MqttUnreachable: no answer within ``wait_s``.
          MqttError: TLS failed (certificate not trusted, ...).
        """
        stopping = stopping or threading.Event()
        deadline = time.monotonic() + wait_s if wait_s > 0 else None
        delay = 0.1
        while True:
            try:
                self._client.connect(self.url.host, self.url.port, keepalive=30)
                break
            except ssl.SSLError as error:
                raise MqttError(f"MQTT broker at {self.url.masked}: TLS failed: {error.reason or error}") from None
            except OSError as error:
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise MqttUnreachable(
                        f"MQTT broker at {self.url.masked} did not answer within {wait_s:g}s: {error}"
                    ) from None
                logger.warning(
                    "MQTT broker at %s does not answer (%s); retrying in %.1fs.", self.url.masked, error, delay
                )
                if stopping.wait(delay):
                    raise MqttUnreachable(f"stopped while waiting for the MQTT broker at {self.url.masked}") from None
                delay = min(delay * 2, 5.0)
        self._client.loop_start()
        with self._lock:
            answered = self._lock.wait_for(lambda: self._connected or self._refusal is not None, CONNACK_TIMEOUT_S)
            refusal = self._refusal
        if refusal is not None or not answered:
            self._client.loop_stop()
            self._client.disconnect()
            reason = refusal or f"no CONNACK within {CONNACK_TIMEOUT_S:g}s"
            raise MqttRefused(f"MQTT broker at {self.url.masked} refused the connection: {reason}")

    @property
    def connected(self) -> bool:
        return self._connected

    def wait_connected(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: self._connected, timeout)

    def close(self, *, clean: bool = True) -> None:
        """Stop; with ``clean``, say ``offline`` first (a kill leaves that to the Last Will)."""
        if clean and self._connected and self.availability:
            self.publish(self.topics.available, OFFLINE, retain=True, kind="available")
            self.flush(timeout=5.0)
        self._client.disconnect()
        self._client.loop_stop()

    # -- publishing ----------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False, kind: str = "event") -> int:
        """Publish at QoS 1; returns the publish's sequence number (see :meth:`confirmed_through`)."""
        began = time.monotonic()
        with self._lock:
            self._sequence += 1
            sequence = self._sequence
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise MqttError(f"paho's queue is full: cannot publish to {topic}")
        with self._lock:
            reason = self._early.pop(info.mid, None)
            if reason is None:
                self._pending[info.mid] = (sequence, began, topic, kind)
                return sequence
        self._done(sequence, began, topic, kind, reason)
        return sequence

    @property
    def last_sequence(self) -> int:
        """The sequence number of the latest publish."""
        with self._lock:
            return self._sequence

    def confirmed_through(self) -> int:
        """The highest sequence number up to which the broker acknowledged every publish (made
        by the calling thread: another thread's publish still in ``publish()`` is not counted).

        Raises:
          MqttError: the broker refused a publish (a failure reason code in its PUBACK).
        """
        with self._lock:
            self._raise_failure()
            if not self._pending:
                return self._sequence
            return min(pending[0] for pending in self._pending.values()) - 1

    def wait_below(self, limit: int, timeout: float | None = None, stopping: threading.Event | None = None) -> bool:
        """Wait until at most ``limit`` publishes await the broker's acknowledgement (through
        reconnects); ``False`` when ``timeout`` passed or ``stopping`` was set first.

        Raises:
          MqttError: the broker refused a publish.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._wake_at = limit
            while len(self._pending) > limit and not self._failures:
                if stopping is not None and stopping.is_set():
                    return False
                left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                if left <= 0:
                    return False
                self._lock.wait(left)
            self._raise_failure()
            return True

    def flush(self, timeout: float | None = None, stopping: threading.Event | None = None) -> bool:
        """Wait until the broker acknowledged every publish so far (see :meth:`wait_below`)."""
        return self.wait_below(0, timeout, stopping)

    def _raise_failure(self) -> None:
        if self._failures:
            raise MqttError(f"MQTT broker at {self.url.masked} refused a publish: {self._failures[0]}")

    def retained_topics(self, subscriptions: list[str], settle_s: float = 1.0) -> list[str]:
        """The topics under ``subscriptions`` that hold a retained message: subscribe, then collect
        until nothing new came for ``settle_s`` after the broker's SUBACK."""
        seen: dict[str, float] = {}
        subscribed = threading.Event()

        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            if message.retain and message.payload:
                with self._lock:
                    seen[message.topic] = time.monotonic()

        self._client.on_message = on_message
        self._client.on_subscribe = lambda *args: subscribed.set()
        self._client.subscribe([(topic, 1) for topic in subscriptions])
        if not subscribed.wait(CONNACK_TIMEOUT_S):
            raise MqttError(f"MQTT broker at {self.url.masked} did not acknowledge the subscription")
        quiet_since = time.monotonic()
        while True:
            with self._lock:
                last = max([quiet_since, *seen.values()])
            left = last + settle_s - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.1))
        self._client.unsubscribe(subscriptions)
        with self._lock:
            return sorted(seen)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- paho's callbacks (its network thread) ---------------------------------------------------
    def _connected_cb(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            with self._lock:
                self._refusal = str(reason)
                self._lock.notify_all()
            if self._connections:
                logger.error("MQTT broker at %s refused the connection: %s", self.url.masked, reason)
            return
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        if receive_maximum and int(receive_maximum) < MAX_INFLIGHT:
            logger.warning(
                "MQTT broker at %s accepts %s publishes in flight, fewer than the bridge's %d.",
                self.url.masked,
                receive_maximum,
                MAX_INFLIGHT,
            )
        with self._lock:
            self._connections += 1
            self._connected = True
            self._refusal = None
            self._lock.notify_all()
        if self._connections > 1:
            logger.warning("Reconnected to the MQTT broker at %s.", self.url.masked)
            if self.metrics is not None:
                self.metrics.reconnects.inc()
        if self.availability:
            self.publish(self.topics.available, ONLINE, retain=True, kind="available")
        if self._on_connect_hook is not None:
            self._on_connect_hook()

    def _disconnected_cb(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was_connected = self._connected
        with self._lock:
            self._connected = False
            self._lock.notify_all()
        if was_connected and reason.is_failure:
            logger.warning("Lost the MQTT broker at %s (%s); reconnecting.", self.url.masked, reason)

    def _published_cb(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            entry = self._pending.pop(mid, None)
            if entry is None:
                self._early[mid] = reason
                return
        self._done(*entry, reason)

    def _done(self, sequence: int, began: float, topic: str, kind: str, reason: Any) -> None:
        if getattr(reason, "is_failure", False):
            logger.error("MQTT broker at %s refused the publish to %s: %s", self.url.masked, topic, reason)
            with self._lock:
                self._failures.append(f"{topic}: {reason}")
                self._lock.notify_all()
            return
        if self.metrics is not None:
            self.metrics.latency.observe(time.monotonic() - began)
            self.metrics.messages.labels(kind).inc()
            if kind.startswith("event:"):
                self.metrics.events.labels(kind.partition(":")[2]).inc()
        with self._lock:
            if len(self._pending) <= self._wake_at:
                self._lock.notify_all()  # a waiter wants to know: only then, not at every PUBACK
