"""The bridge's errors: each a :class:`~pipeline.errors.FrameflowError`, so the CLI prints one line."""

from __future__ import annotations

from pipeline.errors import FrameflowError


class MqttError(FrameflowError):
    """Something about the MQTT side of the bridge; the message names the URL with its password masked."""


class MqttConfigError(MqttError, ValueError):
    """A setting (``MQTT_URL``, an option, the mapping file) is malformed; the message says which and why."""


class MqttRefused(MqttError):
    """The broker refused the connection (bad user name or password, not authorized): retrying cannot help."""


class MqttUnreachable(MqttError):
    """The broker did not answer within ``--wait-for-mqtt``."""


class BadResult(ValueError):
    """A result entry the mapping cannot turn into detections; the entry is skipped and counted by reason."""
