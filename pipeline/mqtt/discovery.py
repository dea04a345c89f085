"""Home Assistant MQTT discovery: entities that appear without configuration.

For each camera x label the bridge has seen, two retained config messages under the discovery
prefix (``homeassistant``):

* ``homeassistant/sensor/frameflow_<camera>/<label>_count/config``: a sensor whose state is the
  retained count topic;
* ``homeassistant/binary_sensor/frameflow_<camera>/<label>_occupancy/config``: ``ON`` while the
  count is above 0 (device class ``occupancy``).

Each camera is one device (``frameflow_<camera>``); every entity's availability is the bridge's
``frameflow/available``, so Home Assistant shows them unavailable while the bridge is down.
``frameflow mqtt --forget CAMERA`` publishes an empty retained config to each, which removes them.
"""

from __future__ import annotations

import json
from typing import Any

from .topics import OFFLINE, ONLINE, Topics, object_id

#: The two entity kinds per camera x label: (component, suffix).
COMPONENTS = (("sensor", "count"), ("binary_sensor", "occupancy"))


def node_id(prefix: str, camera: str) -> str:
    return object_id(prefix, camera)


def config_topic(discovery_prefix: str, topics: Topics, component: str, camera: str, label: str, suffix: str) -> str:
    return f"{discovery_prefix}/{component}/{node_id(topics.prefix, camera)}/{object_id(label, suffix)}/config"


def camera_config_topics(discovery_prefix: str, topics: Topics, camera: str) -> list[str]:
    """Subscriptions that receive every retained config of ``camera``'s entities."""
    return [f"{discovery_prefix}/{component}/{node_id(topics.prefix, camera)}/+/config" for component, _ in COMPONENTS]


def configs(discovery_prefix: str, topics: Topics, camera: str, label: str) -> list[tuple[str, bytes]]:
    """(topic, JSON payload) of both entities of ``camera`` x ``label``."""
    device = {
        "identifiers": [node_id(topics.prefix, camera)],
        "name": f"{camera} ({topics.prefix})",
        "manufacturer": "frameflow",
        "model": "camera",
    }
    state = topics.count(camera, label)
    common: dict[str, Any] = {
        "state_topic": state,
        "availability_topic": topics.available,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": device,
    }
    entities = {
        "count": {
            **common,
            "name": f"{label} count",
            "unique_id": object_id(topics.prefix, camera, label, "count"),
            "state_class": "measurement",
            "icon": "mdi:counter",
        },
        "occupancy": {
            **common,
            "name": f"{label} occupancy",
            "unique_id": object_id(topics.prefix, camera, label, "occupancy"),
            "device_class": "occupancy",
            "value_template": "{{ 'ON' if value | int(0) > 0 else 'OFF' }}",
        },
    }
    return [
        (
            config_topic(discovery_prefix, topics, component, camera, label, suffix),
            json.dumps(entities[suffix], separators=(",", ":")).encode(),
        )
        for component, suffix in COMPONENTS
    ]
