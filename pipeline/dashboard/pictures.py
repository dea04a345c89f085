"""The cameras page's pictures: each camera's newest frame a processor kept, with its boxes drawn.

A frame's image does not outlive its processing; only a processor run with ``FRAMEFLOW_SNAPSHOT_TTL_S``
keeps the image of a frame whose result found something (:mod:`pipeline.domain.kept_images`). So a
camera's picture is its newest *detection*, and a camera with nothing detected lately shows none. The
detections are read as the MQTT bridge reads them (its :class:`~pipeline.mqtt.mapping.ResultMapping`,
``faces:detected`` and ``objects:detected``) and drawn as it draws its snapshots
(:func:`pipeline.mqtt.snapshots.render`). A picture, once drawn, never changes: the last few are
cached, so many open pages cost one drawing each.
"""

from __future__ import annotations

import collections
import io
import threading
from collections.abc import Iterable
from typing import Any

import redis

from pipeline.domain.kept_images import SNAPSHOT_REF_FIELD, read_kept_image
from pipeline.mqtt.errors import BadResult
from pipeline.mqtt.mapping import ResultMapping
from pipeline.mqtt.snapshots import render

#: Widest thumbnail, in pixels.
THUMBNAIL_WIDTH = 480

#: Pictures kept drawn.
CACHED_PICTURES = 64


def newest_pictures(mapping: ResultMapping, results: Iterable[tuple[str, str, dict[str, str]]]) -> dict[str, Any]:
    """Camera -> its newest result (of ``(stream, entry_id, fields)``, newest first per stream) that
    names a kept image: where to fetch the picture, and the detections in it."""
    newest: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
    for stream, entry_id, fields in results:
        if stream not in mapping.rules or not fields.get(SNAPSHOT_REF_FIELD):
            continue
        try:
            observations = mapping.observations(stream, fields)
        except BadResult:
            continue
        if not observations:
            continue
        camera, order = observations[0].camera, _sortable(entry_id)
        if camera in newest and newest[camera][0] >= order:
            continue
        newest[camera] = (
            order,
            {
                "url": f"/api/pictures/{stream}/{entry_id}",
                "frame_id": fields["frame_id"],
                "detections": [
                    {"label": detection.label, "score": detection.score}
                    for observation in observations
                    for detection in observation.detections
                ],
            },
        )
    return {camera: picture for camera, (_, picture) in newest.items()}


class PictureCache:
    """Draws a result's kept image with its boxes as a thumbnail JPEG, and keeps the last few."""

    def __init__(self, client: redis.Redis, namespace: str, mapping: ResultMapping) -> None:
        self.client = client
        self.namespace = namespace
        self.mapping = mapping
        self._drawn: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()
        self._lock = threading.Lock()

    def picture(self, stream: str, entry_id: str) -> bytes | None:
        """The JPEG of result ``entry_id`` of ``stream``, or None (no such result, no kept image, expired)."""
        key = (stream, entry_id)
        with self._lock:
            if key in self._drawn:
                self._drawn.move_to_end(key)
                return self._drawn[key]
        drawn = self._draw(stream, entry_id)
        if drawn is not None:
            with self._lock:
                self._drawn[key] = drawn
                while len(self._drawn) > CACHED_PICTURES:
                    self._drawn.popitem(last=False)
        return drawn

    def _draw(self, stream: str, entry_id: str) -> bytes | None:
        if stream not in self.mapping.rules:
            return None
        try:
            entries = self.client.xrange(stream, min=entry_id, max=entry_id)
        except redis.ResponseError:  # not an entry id, or not a stream
            return None
        if not entries:
            return None
        fields = {
            name.decode(errors="replace"): value.decode(errors="replace") for name, value in entries[0][1].items()
        }
        try:
            observations = self.mapping.observations(stream, fields)
        except BadResult:
            return None
        image = read_kept_image(self.client, self.namespace, fields.get(SNAPSHOT_REF_FIELD, ""), fields["frame_id"])
        if image is None:
            return None
        drawn = render(image, (detection for observation in observations for detection in observation.detections))
        return _thumbnail(drawn)


def _thumbnail(jpeg: bytes) -> bytes:
    from PIL import Image

    picture = Image.open(io.BytesIO(jpeg))
    if picture.width <= THUMBNAIL_WIDTH:
        return jpeg
    picture.thumbnail((THUMBNAIL_WIDTH, THUMBNAIL_WIDTH * picture.height // picture.width))
    output = io.BytesIO()
    picture.save(output, format="JPEG", quality=85)
    return output.getvalue()


def _sortable(entry_id: str) -> tuple[int, int]:
    millis, _, sequence = entry_id.partition("-")
    return int(millis), int(sequence or 0)
