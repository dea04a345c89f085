"""The demo processor behind ``frameflow demo``: it decodes each frame's image
and publishes a small result entry on the ``demo:results`` stream.

Run it as ordinary Dramatiq workers::

    REDIS_URL=redis://127.0.0.1:6379/0 dramatiq pipeline.broker workers.demo
"""

from __future__ import annotations

import base64
import hashlib
import time

import dramatiq

from pipeline.demo import ACTOR, QUEUE, RESULT_STREAM
from pipeline.redis_streams import RedisStreamsBroker


@dramatiq.actor(queue_name=QUEUE, actor_name=ACTOR, max_retries=3)
def analyse_frame(frame: dict[str, str]) -> None:
    """Decode the frame and record its size and checksum as a result."""
    image = base64.b64decode(frame["image_data"], validate=True)
    broker = dramatiq.get_broker()
    assert isinstance(broker, RedisStreamsBroker), "workers.demo needs `dramatiq pipeline.broker`"
    broker.client.xadd(
        RESULT_STREAM,
        {
            "frame_id": frame["frame_id"],
            "camera_id": frame["camera_id"],
            "bytes": str(len(image)),
            "sha1": hashlib.sha1(image).hexdigest(),
            "captured_at": frame["captured_at"],
            "processed_at": repr(time.time()),
        },
    )
