"""``frameflow mqtt --forget CAMERA``: remove a camera from Home Assistant and from the broker.

Every retained message of the camera (its discovery configs under the discovery prefix, its
counts and snapshots under the prefix) is found by subscribing to them, then replaced by an
empty retained message, which is how MQTT deletes one and how Home Assistant removes an entity.
A running bridge announces the camera again only after its next restart, and only if it sees it.
"""

from __future__ import annotations

import os

from .client import Publisher
from .discovery import camera_config_topics
from .settings import MqttSettings
from .topics import Topics


def forget_camera(settings: MqttSettings, camera: str, settle_s: float = 1.0) -> list[str]:
    """Clear every retained message of ``camera``; returns the topics cleared."""
    topics = Topics(settings.prefix)
    publisher = Publisher(settings.url, f"{settings.client_id}-forget-{os.getpid()}", topics, availability=False)
    publisher.connect(settings.wait_for_mqtt_s)
    try:
        subscriptions = [topics.camera_states(camera)]
        if settings.discovery_prefix:
            subscriptions += camera_config_topics(settings.discovery_prefix, topics, camera)
        cleared = publisher.retained_topics(subscriptions, settle_s)
        for topic in cleared:
            publisher.publish(topic, b"", retain=True, kind="forget")
        publisher.flush(timeout=30.0)
        return cleared
    finally:
        publisher.close()
