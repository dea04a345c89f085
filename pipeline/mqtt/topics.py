"""Every MQTT topic the bridge publishes, named here and only here.

Under the prefix (``frameflow`` by default):

* ``frameflow/available``: ``online`` / ``offline``, retained; ``offline`` is the Last Will;
* ``frameflow/events``: one JSON event per track change (``new`` / ``update`` / ``end``);
* ``frameflow/<camera>/<label>``: the track's current count, retained, back to ``0`` when it ends;
* ``frameflow/<camera>/<label>/snapshot``: a JPEG of the track's best frame, boxes drawn, retained.

Camera ids and labels are checked by :mod:`pipeline.mqtt.mapping` before they get here, so no
topic level ever holds ``/``, ``+`` or ``#``.
"""

from __future__ import annotations

import dataclasses
import re

ONLINE = "online"
OFFLINE = "offline"


@dataclasses.dataclass(frozen=True)
class Topics:
    prefix: str = "frameflow"

    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    def count(self, camera: str, label: str) -> str:
        return f"{self.prefix}/{camera}/{label}"

    def snapshot(self, camera: str, label: str) -> str:
        return f"{self.prefix}/{camera}/{label}/snapshot"

    def camera_states(self, camera: str) -> str:
        """A subscription to every retained state of ``camera`` (counts and snapshots)."""
        return f"{self.prefix}/{camera}/#"


def object_id(*parts: str) -> str:
    """An id Home Assistant accepts (``[a-zA-Z0-9_-]``): other characters of camera ids become ``_``."""
    return "_".join(re.sub(r"[^a-zA-Z0-9_-]", "_", part) for part in parts)
