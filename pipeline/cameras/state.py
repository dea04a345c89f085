"""Each camera's state in Redis, so ``frameflow cameras`` and ``frameflow top`` show it from anywhere.

Like the processor registry: one hash per camera, ``<ns>:camera:<id>``, rewritten every few seconds
with a TTL of three intervals, so a camera whose process died disappears on its own; the set
``<ns>:cameras`` indexes the ids (an id whose hash expired is listed as gone).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis


def camera_state_key(namespace: str, camera_id: str) -> str:
    """The hash holding one camera's state (its TTL is the camera process's liveness)."""
    return f"{namespace}:camera:{camera_id}"


def cameras_index_key(namespace: str) -> str:
    """The set of every camera id whose state was ever written."""
    return f"{namespace}:cameras"


class CameraStateStore:
    """Writes and reads the camera states of one namespace."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client, self.namespace = client, namespace

    def write(self, states: Iterable[dict[str, Any]], ttl_s: float) -> None:
        """Each state (a ``CameraStatus.snapshot()``) in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for state in states:
            key = camera_state_key(self.namespace, state["camera_id"])
            pipe.delete(key)
            pipe.hset(key, mapping={name: json.dumps(value) for name, value in state.items()})
            pipe.pexpire(key, int(ttl_s * 1000))
            pipe.sadd(cameras_index_key(self.namespace), state["camera_id"])
        pipe.execute()

    def read(self) -> list[dict[str, Any]]:
        """Every known camera's state, by id; a camera whose state expired is ``{"camera_id": id, "gone": True}``."""
        ids = sorted(member.decode() for member in self.client.smembers(cameras_index_key(self.namespace)))
        pipe = self.client.pipeline(transaction=False)
        for camera_id in ids:
            pipe.hgetall(camera_state_key(self.namespace, camera_id))
        states = []
        for camera_id, fields in zip(ids, pipe.execute(), strict=True):
            if not fields:
                states.append({"camera_id": camera_id, "gone": True})
                continue
            state = {}
            for name, value in fields.items():
                try:
                    state[name.decode()] = json.loads(value)
                except ValueError:
                    state[name.decode()] = value.decode(errors="replace")
            states.append(state)
        return states

    def forget(self, camera_ids: Iterable[str]) -> None:
        ids = list(camera_ids)
        if ids:
            self.client.srem(cameras_index_key(self.namespace), *ids)
