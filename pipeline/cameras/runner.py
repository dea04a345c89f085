"""``frameflow cameras run``: every camera of the file in one process, through one producer.

Each camera has a capture thread (:mod:`~pipeline.cameras.capture`) feeding its keep-latest slot;
one publisher loop takes, for each camera whose turn has come under its fps cap, the newest frame,
drops it when it is older than the camera's ``max_age`` (counted ``stale``: after a reconnect
nothing old goes out), encodes it and publishes the round's frames together (``publish_many``, one
round trip). The same loop writes the cameras' state to Redis every ``state_interval_s``.

Capture timestamps are the frames' arrival times, strictly increasing per camera.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from pipeline.domain.frames import FrameRejected
from pipeline.processes.heap import settle_heap
from pipeline.processes.producer import FrameProducer

from .backoff import Backoff
from .capture import CaptureThread
from .captured import Captured, output_size
from .config import CameraConfig
from .connect import connector
from .latest import LatestSlot
from .masking import mask_camera_url
from .state import CameraStateStore
from .status import CameraStatus

logger = logging.getLogger(__name__)

#: Skipped-frame reasons counted by the publisher.
STALE, REJECTED, REDIS_DOWN = "stale", "rejected", "redis"

#: How often an idle publisher looks for a camera's next frame.
POLL_S = 0.01


class Feed:
    """One camera as the publisher sees it: its slot, status, capture thread and next turn."""

    def __init__(self, camera: CameraConfig, backoff: Callable[[], Backoff]) -> None:
        self.camera = camera
        self.status = CameraStatus(camera.id, mask_camera_url(camera.url))
        self.slot: LatestSlot[Captured] = LatestSlot(self.status.skip)
        self.capture = CaptureThread(connector(camera, self.status), self.slot, self.status, backoff())
        self.period_s = 1 / camera.fps
        self.next_turn = 0.0
        self.last_stamp = datetime.min.replace(tzinfo=UTC)

    def frame_to_publish(self, now: float) -> dict[str, Any] | None:
        """The newest frame as ``publish`` arguments when this camera's turn has come, else ``None``."""
        if now < self.next_turn:
            return None
        captured = self.slot.take()
        if captured is None:
            return None
        self.next_turn = max(self.next_turn, now) + self.period_s
        if captured.age_s() > self.camera.max_age:
            self.status.skip(STALE)
            return None
        size = output_size(captured.width, captured.height, self.camera.width, self.camera.height)
        try:
            image, width, height = captured.encoded(size, self.camera.quality)
        except (OSError, ValueError) as error:
            logger.warning("camera %s: cannot encode a frame: %s", self.camera.id, error)
            self.status.skip(REJECTED)
            return None
        self.last_stamp = max(captured.captured_at, self.last_stamp + timedelta(microseconds=1))
        return {
            "camera_id": self.camera.id,
            "image": image,
            "capabilities": list(self.camera.capabilities),
            "width": width,
            "height": height,
            "format": "jpeg",
            "metadata": {"source": self.camera.kind, "codec": captured.codec},
            "timestamp": self.last_stamp,
            "max_age_ms": max(1, int(self.camera.max_age * 1000)),
        }


class CameraRunner:
    """Runs ``cameras`` (the enabled ones) until :meth:`stop`.

    Parameters:
      cameras: the cameras file's cameras; disabled ones are not started.
      producer: publishes every camera's frames.
      state: where the cameras' state goes (``None``: nowhere).
      state_interval_s: how often it is written (its TTL is three intervals).
      backoff: makes each capture thread's reconnect backoff.
    """

    def __init__(
        self,
        cameras: list[CameraConfig],
        producer: FrameProducer,
        *,
        state: CameraStateStore | None = None,
        state_interval_s: float = 2.0,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self.feeds = [Feed(camera, backoff) for camera in cameras if camera.enabled]
        self.producer, self.state, self.state_interval_s = producer, state, state_interval_s
        self.stopping = threading.Event()
        self.redis_down = False

    @property
    def statuses(self) -> list[CameraStatus]:
        return [feed.status for feed in self.feeds]

    def run(self) -> None:
        """Start the capture threads and publish until :meth:`stop`; then stop them."""
        settle_heap()  # before the first frame, as a processor does (pipeline/processes/heap.py)
        for feed in self.feeds:
            feed.capture.start()
        next_state = time.monotonic()
        try:
            while not self.stopping.is_set():
                now = time.monotonic()
                batch = [(feed, frame) for feed in self.feeds if (frame := feed.frame_to_publish(now)) is not None]
                if batch:
                    self._publish(batch)
                if self.state is not None and now >= next_state:
                    self._write_state()
                    next_state = now + self.state_interval_s
                waits = [feed.next_turn - time.monotonic() for feed in self.feeds]
                self.stopping.wait(max(POLL_S, min(waits, default=POLL_S)))
        finally:
            for feed in self.feeds:
                feed.capture.stop()
            for feed in self.feeds:
                feed.capture.join(timeout=1)

    def stop(self) -> None:
        """Safe from a signal handler: only sets an event."""
        self.stopping.set()

    def _publish(self, batch: list[tuple[Feed, dict[str, Any]]]) -> None:
        try:
            decisions = self.producer.publish_many(frame for _, frame in batch)
        except FrameRejected:
            for feed, frame in batch:  # find the one the pipeline refuses; the others go out
                self._publish_one(feed, frame)
            return
        except redis.RedisError as error:
            self._redis_failed(error, f"{len(batch)} frame(s) skipped")
            for feed, _ in batch:
                feed.status.skip(REDIS_DOWN)
            return
        self._redis_answered()
        for (feed, _), decision in zip(batch, decisions, strict=True):
            if decision.refused:  # Redis refused its write (out of memory, ...): skipped, as Redis's
                feed.status.skip(REDIS_DOWN)
            else:
                feed.status.frame_out()

    def _publish_one(self, feed: Feed, frame: dict[str, Any]) -> None:
        try:
            self.producer.publish(**frame)
        except FrameRejected as error:
            logger.warning("camera %s: frame refused: %s", feed.camera.id, error)
            feed.status.skip(REJECTED)
        except redis.RedisError as error:
            self._redis_failed(error, "a frame skipped")
            feed.status.skip(REDIS_DOWN)
        else:
            feed.status.frame_out()

    def _redis_failed(self, error: redis.RedisError, what: str) -> None:
        """One line when Redis stops answering, not one per frame: the frames are counted (``redis``)."""
        if not self.redis_down:
            logger.warning("cameras: Redis: %s; %s, and frames are skipped and counted until it answers", error, what)
        self.redis_down = True

    def _redis_answered(self) -> None:
        if self.redis_down:
            logger.info("cameras: Redis answers again; publishing")
        self.redis_down = False

    def _write_state(self) -> None:
        assert self.state is not None
        try:
            self.state.write([status.snapshot() for status in self.statuses], ttl_s=3 * self.state_interval_s)
        except redis.RedisError as error:
            self._redis_failed(error, "the cameras' state not written")
