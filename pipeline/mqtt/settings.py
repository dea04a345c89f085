"""The bridge's configuration: every ``MQTT_URL`` / ``FRAMEFLOW_MQTT_*`` variable, read here only.

Command-line options override these (``frameflow mqtt --help``); the URL is kept whole only
inside :class:`MqttUrl`, and everything that prints it uses :attr:`MqttUrl.masked`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.settings import mask_url

from .errors import MqttConfigError

#: Where the bridge publishes when nothing says otherwise: a broker on this machine.
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"

#: Topic prefixes: one MQTT level of letters, digits, ``_``, ``-`` or ``.`` (no wildcard, no ``/``).
_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclasses.dataclass(frozen=True)
class MqttUrl:
    """A parsed ``mqtt://`` or ``mqtts://`` URL.

    ``mqtts://user:password@host:8883/?ca=/path/ca.pem``: TLS, verified against ``ca``
    (``ca_certs`` is accepted too; without it, the system's CAs). The user name and password
    may be percent-encoded. ``str()`` and :attr:`masked` never show the password.
    """

    url: str = dataclasses.field(repr=False)  # holds the password: repr shows the parts, str the masked URL
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    ca_file: str | None = None

    @classmethod
    def parse(cls, url: str) -> MqttUrl:
        masked = mask_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise MqttConfigError(f"MQTT_URL {masked!r} is not a URL: {error}") from None
        if parts.scheme not in ("mqtt", "mqtts"):
            raise MqttConfigError(f"MQTT_URL {masked!r}: the scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise MqttConfigError(f"MQTT_URL {masked!r} names no host")
        query = parse_qs(parts.query)
        unknown = set(query) - {"ca", "ca_certs"}
        if unknown:
            raise MqttConfigError(f"MQTT_URL {masked!r}: unknown parameter(s) {', '.join(sorted(unknown))}")
        ca_file = (query.get("ca") or query.get("ca_certs") or [None])[0]
        tls = parts.scheme == "mqtts"
        if ca_file and not tls:
            raise MqttConfigError(f"MQTT_URL {masked!r}: a CA file needs mqtts://")
        if ca_file and not os.path.isfile(ca_file):
            raise MqttConfigError(f"MQTT_URL {masked!r}: the CA file {ca_file} does not exist")
        return cls(
            url=url,
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ca_file=ca_file,
        )

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    def __str__(self) -> str:
        return self.masked


@dataclasses.dataclass(frozen=True)
class MqttSettings:
    """What the bridge reads from the environment, with its default.

    Attributes:
      url: ``MQTT_URL``, the broker (see :class:`MqttUrl`).
      prefix: ``FRAMEFLOW_MQTT_PREFIX``, the first level of every topic (``frameflow/events``).
      discovery_prefix: ``FRAMEFLOW_MQTT_DISCOVERY_PREFIX``, Home Assistant's (``homeassistant``); empty
        publishes no discovery.
      gap_s: ``FRAMEFLOW_MQTT_GAP_S``, how long a label may go unseen on a camera before its track ends.
      mapping_file: ``FRAMEFLOW_MQTT_MAPPING``, a YAML file declaring which results become events
        (default: frameflow's own ``faces:detected`` and ``objects:detected``).
      group: ``FRAMEFLOW_MQTT_GROUP``, the consumer group on the result streams.
      consumer: ``FRAMEFLOW_MQTT_CONSUMER``, this bridge's consumer name. Keep it stable across restarts:
        a restarted bridge first re-reads what its previous run left unacknowledged.
      client_id: ``FRAMEFLOW_MQTT_CLIENT_ID``, the MQTT client id.
      wait_for_mqtt_s: ``FRAMEFLOW_MQTT_WAIT_S``, how long the first connection may take before giving up;
        0 (the default) waits forever, as a service started before its broker should.
    """

    url: MqttUrl
    prefix: str = "frameflow"
    discovery_prefix: str = "homeassistant"
    gap_s: float = 5.0
    mapping_file: str | None = None
    group: str = "mqtt-bridge"
    consumer: str = "bridge-1"
    client_id: str = "frameflow-bridge"
    wait_for_mqtt_s: float = 0.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> MqttSettings:
        """Settings from ``env`` (default: the process's), then ``overrides`` (options given, not ``None``)."""
        env = os.environ if env is None else env
        given = {name: value for name, value in overrides.items() if value is not None}
        url = given.pop("url", None) or env.get("MQTT_URL") or DEFAULT_MQTT_URL
        values: dict[str, object] = {
            "prefix": env.get("FRAMEFLOW_MQTT_PREFIX") or cls.prefix,
            "discovery_prefix": env.get("FRAMEFLOW_MQTT_DISCOVERY_PREFIX", cls.discovery_prefix),
            "gap_s": _float(env, "FRAMEFLOW_MQTT_GAP_S", cls.gap_s),
            "mapping_file": env.get("FRAMEFLOW_MQTT_MAPPING") or None,
            "group": env.get("FRAMEFLOW_MQTT_GROUP") or cls.group,
            "consumer": env.get("FRAMEFLOW_MQTT_CONSUMER") or cls.consumer,
            "client_id": env.get("FRAMEFLOW_MQTT_CLIENT_ID") or cls.client_id,
            "wait_for_mqtt_s": _float(env, "FRAMEFLOW_MQTT_WAIT_S", cls.wait_for_mqtt_s),
        }
        values.update(given)
        settings = cls(url=MqttUrl.parse(str(url)), **values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            raise MqttConfigError(f"MQTT prefix {self.prefix!r}: one topic level of letters, digits, _ - or .")
        if self.discovery_prefix and not _PREFIX.fullmatch(self.discovery_prefix):
            raise MqttConfigError(f"discovery prefix {self.discovery_prefix!r}: one topic level of letters, digits")
        if not self.gap_s > 0:
            raise MqttConfigError(f"the track gap must be more than 0 seconds (got {self.gap_s:g})")


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise MqttConfigError(f"{name}={raw!r} is not a number") from None
