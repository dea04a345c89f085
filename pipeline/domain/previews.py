"""Camera previews: each camera's newest frame, kept a few seconds so a page can show it.

A frame's image does not outlive its processing, and a processor keeps one only when it found
something (:mod:`pipeline.domain.kept_images`): a camera with nothing detected has no picture. So a
producer keeps, at most once per ``FRAMEFLOW_PREVIEW_INTERVAL_S`` per camera
(:mod:`pipeline.processes.previews`), the image of the camera's newest frame as it came (no
re-encoding) under ``<ns>:camera:<id>:preview``, a hash with a short TTL, and notes the camera in
the sorted set ``<ns>:previews`` (scored by the time written) so a reader lists cameras without a
SCAN. The two keys sit in different Redis Cluster slots: they are written by a non-transactional
pipeline, never by one script. ``raw`` frames (no container a browser can open) keep no preview.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from pipeline.domain.keys import preview_key, previews_index_key

if TYPE_CHECKING:
    import redis

#: Formats a browser shows as they are, and their media types.
PREVIEW_MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp"}


@dataclasses.dataclass(frozen=True)
class Preview:
    """A camera's newest kept frame: its image bytes as published, their format and the frame's id."""

    camera_id: str
    frame_id: str
    format: str
    image: bytes

    @property
    def media_type(self) -> str:
        return PREVIEW_MEDIA_TYPES[self.format]


def preview_commands(namespace: str, preview: Preview, now_ms: int, ttl_s: int) -> list[tuple[Any, ...]]:
    """The commands that keep ``preview`` for ``ttl_s`` seconds and list its camera (forgetting
    cameras whose preview expired); each touches one key."""
    key, index = preview_key(namespace, preview.camera_id), previews_index_key(namespace)
    return [
        ("HSET", key, "image", preview.image, "format", preview.format, "frame_id", preview.frame_id),
        ("EXPIRE", key, ttl_s),
        ("ZADD", index, now_ms, preview.camera_id),
        ("ZREMRANGEBYSCORE", index, "-inf", f"({now_ms - ttl_s * 1000}"),
    ]


def preview_versions(client: redis.Redis, namespace: str) -> dict[str, str]:
    """Camera -> the frame id of its preview, for every camera whose preview still lives: two round
    trips, no image read."""
    cameras = [camera.decode() for camera in client.zrange(previews_index_key(namespace), 0, -1)]
    if not cameras:
        return {}
    pipe = client.pipeline(transaction=False)
    for camera in cameras:
        pipe.hget(preview_key(namespace, camera), "frame_id")
    return {
        camera: frame_id.decode()
        for camera, frame_id in zip(cameras, pipe.execute(), strict=True)
        if isinstance(frame_id, bytes)
    }


def read_preview(client: redis.Redis, namespace: str, camera_id: str) -> Preview | None:
    """The preview of ``camera_id``, or None (never kept, expired, or not a format a browser shows)."""
    stored = client.hgetall(preview_key(namespace, camera_id))
    fields = {name.decode(errors="replace"): value for name, value in stored.items()}
    format = fields.get("format", b"").decode(errors="replace")
    if not fields.get("image") or format not in PREVIEW_MEDIA_TYPES:
        return None
    return Preview(camera_id, fields.get("frame_id", b"").decode(errors="replace"), format, fields["image"])
