"""What one camera is doing, as its capture thread and the publisher see it: the numbers behind
``frameflow cameras``, the camera state in Redis and the ``frameflow_camera_*`` metrics.

One object per camera, written by two threads (capture and publish), read by the state writer and
the metrics scrape; a lock keeps each update whole.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from typing import Any


@dataclasses.dataclass
class CameraStatus:
    """Counters and the connection state of one camera."""

    camera_id: str
    url: str  #: masked
    connected: bool = False
    #: Monotonic time since when the camera is down (``None`` while connected).
    down_since: float | None = dataclasses.field(default_factory=time.monotonic)
    last_error: str = ""
    codec: str = ""
    width: int = 0
    height: int = 0
    frames_in: int = 0
    frames_out: int = 0
    reconnects: int = 0
    last_gap_s: float = 0.0
    last_frame_at: float | None = None  #: monotonic
    skipped: Counter[str] = dataclasses.field(default_factory=Counter)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)
    _rate_sample: tuple[float, int, int] = dataclasses.field(default=(0.0, 0, 0), repr=False)

    def __post_init__(self) -> None:
        self._rate_sample = (time.monotonic(), 0, 0)

    def connected_to(self, codec: str, width: int, height: int) -> float | None:
        """The camera answered; returns the gap (seconds without frames) when it was down before."""
        with self._lock:
            gap = None
            if self.down_since is not None and self.frames_in:
                since = self.last_frame_at if self.last_frame_at is not None else self.down_since
                gap = time.monotonic() - since
                self.reconnects += 1
                self.last_gap_s = gap
            self.connected, self.down_since, self.last_error = True, None, ""
            self.codec, self.width, self.height = codec, width, height
            return gap

    def disconnected(self, reason: str) -> None:
        with self._lock:
            if self.connected or self.down_since is None:
                self.down_since = time.monotonic()
            self.connected, self.last_error = False, reason

    def frame_in(self) -> None:
        with self._lock:
            self.frames_in += 1
            self.last_frame_at = time.monotonic()

    def frame_out(self) -> None:
        with self._lock:
            self.frames_out += 1

    def skip(self, reason: str, count: int = 1) -> None:
        with self._lock:
            self.skipped[reason] += count

    def snapshot(self) -> dict[str, Any]:
        """The state as plain values: ages and durations in seconds, rates since the last snapshot."""
        with self._lock:
            now = time.monotonic()
            then, frames_in, frames_out = self._rate_sample
            elapsed = max(now - then, 1e-6)
            self._rate_sample = (now, self.frames_in, self.frames_out)
            return {
                "camera_id": self.camera_id,
                "url": self.url,
                "connected": self.connected,
                "down_for_s": None if self.down_since is None else now - self.down_since,
                "last_error": self.last_error,
                "codec": self.codec,
                "width": self.width,
                "height": self.height,
                "last_frame_age_s": None if self.last_frame_at is None else now - self.last_frame_at,
                "fps_in": (self.frames_in - frames_in) / elapsed,
                "fps_out": (self.frames_out - frames_out) / elapsed,
                "frames_in": self.frames_in,
                "frames_out": self.frames_out,
                "skipped": dict(self.skipped),
                "reconnects": self.reconnects,
                "last_gap_s": self.last_gap_s,
            }

    def totals(self) -> tuple[int, int, int, dict[str, int]]:
        """Frames in, frames out, reconnects and skipped frames by reason (for the metrics)."""
        with self._lock:
            return self.frames_in, self.frames_out, self.reconnects, dict(self.skipped)
