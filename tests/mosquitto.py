"""A real Mosquitto broker for the MQTT bridge's tests, and a real paho subscriber.

:class:`Mosquitto` runs Debian's ``mosquitto`` (``scripts/ensure-mosquitto`` installs it) on a free
port of 127.0.0.1 with a config file generated in the test's folder: persistence on (so a stop and
start keeps retained messages and the subscriber's session, as a real deployment's broker would),
optionally TLS (certificates made by trustme, :class:`tests.tls.Certificates`) and a password
file. Never the machine's own 1883. :class:`Subscriber` records everything it receives and
:meth:`Subscriber.wait_for` polls it against a deadline.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from pipeline.streams.embedded import free_port
from tests.polling import wait_until
from tests.tls import Certificates


def mosquitto_binary() -> str:
    binary = os.environ.get("FRAMEFLOW_MOSQUITTO") or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        pytest.fail("the MQTT tests need Mosquitto: run scripts/ensure-mosquitto (apt-get install mosquitto)")
    return binary


class Mosquitto:
    """A broker process of our own; see the module docstring."""

    def __init__(
        self, folder: Path, *, certificates: Certificates | None = None, users: dict[str, str] | None = None
    ) -> None:
        self.folder = folder
        self.certificates = certificates
        self.users = users or {}
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = folder / "mosquitto.log"
        folder.mkdir(parents=True, exist_ok=True)
        self.config_path = self._write_config()

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"user {getpass.getuser()}",
            "persistence true",
            f"persistence_location {self.folder}/",
            "max_queued_messages 0",  # no limit for a subscriber's offline queue: nothing may be dropped
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if self.users:
            password_file = self.folder / "passwords"
            password_file.write_text("")
            for user, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(password_file), user, password], check=True, capture_output=True
                )
            lines += [f"password_file {password_file}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if self.certificates is not None:
            lines += [
                f"cafile {self.certificates.ca_file}",
                f"certfile {self.certificates.server_cert}",
                f"keyfile {self.certificates.server_key}",
            ]
        path = self.folder / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def url(self, user: str | None = None, password: str | None = None) -> str:
        credentials = f"{user}:{password}@" if user else ""
        if self.certificates is not None:
            return f"mqtts://{credentials}127.0.0.1:{self.port}?ca={self.certificates.ca_file}"
        return f"mqtt://{credentials}127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it for its whole life
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_until(self._accepts, 10, lambda: f"mosquitto on {self.port}:\n{self.log_tail()}")
        return self

    def _accepts(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"mosquitto exited with {self.process.returncode}:\n{self.log_tail()}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """SIGTERM (Mosquitto saves its persistence file on the way out) and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Subscriber:
    """A paho client subscribed to ``#`` (QoS 1) that records every message.

    ``persistent`` keeps its session in the broker (MQTT 3.1.1, clean session off), so messages
    published while it is disconnected (a broker restart) wait for it.
    """

    def __init__(
        self,
        broker: Mosquitto,
        *,
        persistent: bool = False,
        user: str | None = None,
        password: str | None = None,
        topics: tuple[str, ...] = ("#",),
    ) -> None:
        self.topics = topics
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client_id = f"test-subscriber-{uuid.uuid4().hex[:8]}"
        if persistent:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                clean_session=False,
                protocol=MQTTProtocolVersion.MQTTv311,
            )
        else:
            self.client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
            )
        if user:
            self.client.username_pw_set(user, password)
        if broker.certificates is not None:
            self.client.tls_set(ca_certs=broker.certificates.ca_file)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        wait_until(self._subscribed.is_set, 10, "the test subscriber's SUBACK")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if not reason.is_failure:
            client.subscribe([(topic, 1) for topic in self.topics])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload, bool(message.retain)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # -- reading what arrived ------------------------------------------------------------------
    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for name, payload, _ in self.messages if name == topic]

    def latest(self, topic: str) -> bytes | None:
        payloads = self.on(topic)
        return payloads[-1] if payloads else None

    def events(self, prefix: str = "frameflow") -> list[dict[str, Any]]:
        return [json.loads(payload) for payload in self.on(f"{prefix}/events")]

    def topics_seen(self) -> set[str]:
        with self._lock:
            return {name for name, _, _ in self.messages}

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0, what: str = "messages") -> Any:
        return wait_until(predicate, timeout, lambda: f"{what}; received {len(self.messages)} message(s)")


def wait_port_free(port: int, timeout: float = 10.0) -> None:
    """Until nothing listens on ``port`` (a stopped broker's socket is closed)."""

    def free() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) != 0

    wait_until(free, timeout, f"port {port} to be free")


def monotonic_deadline(seconds: float) -> Callable[[], bool]:
    """A predicate that becomes true ``seconds`` from now (to keep a producer running for a while)."""
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end
