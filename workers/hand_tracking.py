"""MediaPipe's hand landmarker, one tracker per camera.

In video mode the landmarker tracks: once it has found a hand it follows it from
frame to frame with the landmark model alone, skipping the palm detector (about
half the cost), and it needs that camera's frames in order, with increasing
timestamps. So each camera gets its own :class:`CameraTrack` — a video-mode
landmarker and the camera's :class:`~workers.held_gestures.HeldGestures` — in
:class:`CameraTracks`. A frame that arrives out of order (its timestamp not after
the camera's last) goes through a shared image-mode landmarker instead and leaves the
camera's state alone.

A camera's state is reset (a new tracker, no held gesture) when it has been idle for
``idle_reset_s``: its frames went elsewhere meanwhile (the router moved the camera to
another instance and back), or it stopped; idle trackers are closed as soon as another
camera's frame comes. A tracker holds about 50 MB (its own copy of both networks), so at
most ``max_cameras`` are kept, the least recently used closed first.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions
from mediapipe.tasks.python.vision import HandLandmarker, HandLandmarkerOptions, RunningMode

from .held_gestures import HeldGestures


@dataclasses.dataclass(frozen=True)
class Hand:
    """One hand found in a frame: MediaPipe's handedness and its score, the 21 landmarks in pixels
    of the frame (x, y) and in metres around the hand's centre (x, y, z)."""

    handedness: str
    score: float
    pixels: np.ndarray
    world: np.ndarray


def open_landmarker(model: bytes, *, video: bool, max_hands: int) -> HandLandmarker:
    """A hand landmarker on the ``.task`` bytes ``model``, in video (tracking) or image mode."""
    options = HandLandmarkerOptions(
        base_options=BaseOptions(model_asset_buffer=model),
        running_mode=RunningMode.VIDEO if video else RunningMode.IMAGE,
        num_hands=max_hands,
    )
    return HandLandmarker.create_from_options(options)


def as_mp_image(picture: np.ndarray) -> mp.Image:
    """An RGB picture (H x W x 3, uint8) as MediaPipe's image."""
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(picture, dtype=np.uint8))


def hands_in(result: object, width: int, height: int) -> list[Hand]:
    """The hands of a :class:`HandLandmarkerResult`, landmarks scaled to the frame's pixels."""
    hands = []
    for points, world, handedness in zip(
        result.hand_landmarks,  # type: ignore[attr-defined]
        result.hand_world_landmarks,  # type: ignore[attr-defined]
        result.handedness,  # type: ignore[attr-defined]
        strict=True,
    ):
        category = handedness[0]
        hands.append(
            Hand(
                handedness=category.category_name,
                score=float(category.score),
                pixels=np.array([[p.x * width, p.y * height] for p in points]),
                world=np.array([[p.x, p.y, p.z] for p in world]),
            )
        )
    return hands


@dataclasses.dataclass
class CameraTrack:
    """One camera's tracker and held gestures, and the last frame time it saw."""

    landmarker: HandLandmarker
    held: HeldGestures
    last_timestamp_us: int = -1
    last_video_ms: int = -1
    used_at: float = dataclasses.field(default_factory=time.monotonic)


class CameraTracks:
    """Every camera's :class:`CameraTrack` (see the module docstring).

    Parameters:
      model: the ``.task`` bytes.
      max_hands: hands looked for per frame.
      held: makes a camera's :class:`HeldGestures`.
      idle_reset_s: a camera idle this long starts afresh.
      max_cameras: trackers kept at most.
    """

    def __init__(
        self,
        model: bytes,
        *,
        max_hands: int,
        held: Callable[[], HeldGestures],
        idle_reset_s: float = 10.0,
        max_cameras: int = 16,
    ) -> None:
        self.model = model
        self.max_hands = max_hands
        self.new_held = held
        self.idle_reset_s = idle_reset_s
        self.max_cameras = max_cameras
        self.still = open_landmarker(model, video=False, max_hands=max_hands)
        self._tracks: collections.OrderedDict[str, CameraTrack] = collections.OrderedDict()
        self._lock = threading.Lock()
        #: How many times a camera's state was started afresh (a new camera counts too).
        self.resets = 0

    def track(self, camera_id: str) -> CameraTrack:
        """The camera's track, new when it had none or was idle past ``idle_reset_s``."""
        with self._lock:
            now = time.monotonic()
            for idle in [name for name, kept in self._tracks.items() if now - kept.used_at > self.idle_reset_s]:
                self._tracks.pop(idle).landmarker.close()
            track = self._tracks.pop(camera_id, None)
            if track is None:
                track = CameraTrack(open_landmarker(self.model, video=True, max_hands=self.max_hands), self.new_held())
                self.resets += 1
            track.used_at = now
            self._tracks[camera_id] = track
            while len(self._tracks) > self.max_cameras:
                _, oldest = self._tracks.popitem(last=False)
                oldest.landmarker.close()
            return track

    def detect(self, camera_id: str, picture: np.ndarray, timestamp_us: int) -> tuple[list[Hand], CameraTrack | None]:
        """The hands in one frame of ``camera_id`` taken at ``timestamp_us`` (microseconds), and
        the camera's track when the frame came in order (``None`` for a frame not newer than the
        camera's last, detected in image mode)."""
        height, width = picture.shape[:2]
        track = self.track(camera_id)
        image = as_mp_image(picture)
        if timestamp_us <= track.last_timestamp_us:
            return hands_in(self.still.detect(image), width, height), None
        # MediaPipe counts milliseconds and wants each frame's later: two frames within one ms stay apart.
        video_ms = max(timestamp_us // 1000, track.last_video_ms + 1)
        track.last_timestamp_us, track.last_video_ms = timestamp_us, video_ms
        return hands_in(track.landmarker.detect_for_video(image, video_ms), width, height), track

    def detect_still(self, picture: np.ndarray) -> list[Hand]:
        """The hands in one picture, no camera and no tracking."""
        height, width = picture.shape[:2]
        return hands_in(self.still.detect(as_mp_image(picture)), width, height)

    @property
    def cameras(self) -> list[str]:
        """The cameras with a tracker now, least recently used first."""
        with self._lock:
            return list(self._tracks)

    def close(self) -> None:
        with self._lock:
            for track in self._tracks.values():
                track.landmarker.close()
            self._tracks.clear()
            self.still.close()
