"""``CameraPreviews``: the producer's side of camera previews (:mod:`pipeline.domain.previews`).

A camera publishes many frames a second; a page needs about one. So after frames are published,
the newest frame of each camera whose last preview is older than the interval is kept, all in one
pipelined round trip; most publishes find no camera due and cost a clock read per frame. The
preview is a nicety: a failed write is one log line (never the image), not a failed publish.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import dramatiq
import redis

from pipeline.domain.frames import IMAGE_FIELD
from pipeline.domain.previews import PREVIEW_MEDIA_TYPES, Preview, preview_commands

logger = logging.getLogger(__name__)

#: The shortest life of a preview, in seconds: a page polling every second or two still finds one.
MIN_PREVIEW_TTL_S = 10


class CameraPreviews:
    """Keeps each camera's newest published frame as its preview, at most once per interval.

    Parameters:
      client: the producer's Redis.
      namespace: the keys' prefix.
      interval_s: seconds between two previews of one camera; 0 keeps none.
      ttl_s: how long a preview lives (default: the longer of :data:`MIN_PREVIEW_TTL_S` and 3 intervals).
      clock: monotonic seconds (a test steps it).
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        interval_s: float,
        *,
        ttl_s: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.interval_s = interval_s
        self.ttl_s = ttl_s if ttl_s is not None else max(MIN_PREVIEW_TTL_S, math.ceil(3 * interval_s))
        self.clock = clock
        self._kept_at: dict[str, float] = {}

    def keep(self, messages: Iterable[dramatiq.Message]) -> None:
        """Keep the newest frame of each due camera among the published ``messages`` (frame messages)."""
        if self.interval_s <= 0:
            return
        now = self.clock()
        due: dict[str, dict[str, Any]] = {}
        for message in messages:
            fields = message.args[0]
            camera = fields["camera_id"]
            kept_at = self._kept_at.get(camera)
            if (kept_at is None or now - kept_at >= self.interval_s) and fields["format"] in PREVIEW_MEDIA_TYPES:
                due[camera] = fields
        if due:
            self._write([_preview(fields) for fields in due.values()])
            self._kept_at.update(dict.fromkeys(due, now))

    def _write(self, previews: list[Preview | None]) -> None:
        now_ms = int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=False)
        for preview in previews:
            if preview is not None:
                for command in preview_commands(self.namespace, preview, now_ms, self.ttl_s):
                    pipe.execute_command(*command)
        try:
            pipe.execute()
        except redis.RedisError as error:
            logger.warning("Cannot keep camera previews (the frames were published): %s", error)


def _preview(fields: dict[str, Any]) -> Preview | None:
    image = fields.get(IMAGE_FIELD)  # raw, as FrameProducer publishes it
    if not isinstance(image, bytes):
        try:
            image = base64.b64decode(fields["image_data"], validate=True)  # a frame dict sent the seed's way
        except (KeyError, TypeError, binascii.Error):
            return None  # not an inline image: nothing to keep
    return Preview(fields["camera_id"], fields["frame_id"], fields["format"], image)
