"""Gesture detection: MediaPipe's hand landmarker, one tracker per camera, and gestures
named from the landmarks (:mod:`workers.hand_gestures`).

Results go to ``gestures:detected``, one per frame:

* ``hands_detected`` and ``hands``, each with ``handedness`` (``Left``/``Right``, as
  MediaPipe names it), ``score``, ``landmarks`` (21 [x, y] in pixels of the frame) and
  ``box`` (x1, y1, x2, y2 around them);
* ``gestures``: one per hand making a gesture, with its ``label``, ``hand``, ``confidence``
  and ``box`` (a hand that makes none is only in ``hands``), and ``gesture``, the most
  confident label of the frame (``none`` without one). Each entry is a detection the MQTT
  bridge can map (``{items: gestures, label_key: label, score_key: confidence}``);
* ``events``: ``gesture_started`` / ``gesture_ended`` when a gesture has been held for
  ``FRAMEFLOW_GESTURE_HOLD_FRAMES`` frames of the camera, or let go for as many
  (:mod:`workers.held_gestures`); usually empty.

Tracking and held gestures need every frame of a camera, in order, at one instance:
the processor registers with ``affinity="camera"``, and the router keeps each camera
on one live instance (``middleware/affinity.py``).

The weights come from the model cache; fetch them once with::

    frameflow models fetch hands

Run it the seed's way::

    REDIS_URL=redis://127.0.0.1:6379/0 python -m workers.gesture_detection

or as Dramatiq worker processes (one process: the trackers live in it)::

    REDIS_URL=redis://127.0.0.1:6379/0 dramatiq pipeline.broker workers.gesture_detection -p 1

Environment: ``PROCESSOR_ID`` (``gesture-detection-1``), ``PROCESSOR_CAPACITY`` (5),
``HEALTH_CHECK_INTERVAL`` (5), and the model settings of :mod:`workers.settings`
(``FRAMEFLOW_GESTURE_WEIGHTS``, ``FRAMEFLOW_GESTURE_HOLD_FRAMES``, ``FRAMEFLOW_GESTURE_RULES``,
``FRAMEFLOW_MAX_HANDS``, ``FRAMEFLOW_GESTURE_MAX_CAMERAS``, ``FRAMEFLOW_MAX_BATCH``,
``FRAMEFLOW_MAX_WAIT_MS``). Needs the
``gestures`` extra: ``pip install 'frameflow[gestures]'``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import ProcessorClient
from pipeline.domain.images import decode_frame_image
from pipeline.errors import UnprocessableFrame, WeightsMissing
from pipeline.processes.launch import options_from_env, run_until_signalled
from pipeline.processes.processor import serve_with_dramatiq
from pipeline.tools.hand_model import hand_landmarker_path
from pipeline.tools.models import FETCH_COMMAND

from .hand_gestures import NO_GESTURE, GestureClassifier, classifier_with, hand_pose
from .hand_tracking import CameraTracks, Hand
from .held_gestures import HeldGestures
from .settings import ModelSettings

logger = logging.getLogger(__name__)

#: What the gesture processor offers and where its results go (the seed's names).
CAPABILITIES = ["gesture_detection"]
RESULT_STREAM = "gestures:detected"


class GestureDetectionProcessor(ProcessorClient):
    """Finds hands and names their gestures, tracking each camera (see the module docstring).

    Parameters: the :class:`~pipeline.ProcessorClient`'s, plus ``settings`` (default:
    :meth:`ModelSettings.from_env`) and ``classifier`` (default: the built-in rules and
    those of ``FRAMEFLOW_GESTURE_RULES``).
    """

    version = "1.0"
    model_name = "hand_landmarker"
    affinity = "camera"

    def __init__(
        self, *, settings: ModelSettings | None = None, classifier: GestureClassifier | None = None, **options: Any
    ) -> None:
        super().__init__(**options)
        self.settings = settings or ModelSettings.from_env()
        self.max_batch = self.settings.max_batch
        self.max_wait_ms = self.settings.max_wait_ms
        self.classifier = classifier or classifier_with(self.settings.gesture_rules)
        self.tracks: CameraTracks | None = None
        self._load_lock = threading.Lock()

    def weights_path(self) -> Path:
        """``FRAMEFLOW_GESTURE_WEIGHTS``, else the model cache's ``hand_landmarker.task``."""
        configured = self.settings.gesture_weights
        return Path(configured).expanduser() if configured else hand_landmarker_path()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the model, then register and consume (no frame is routed here before)."""
        await asyncio.to_thread(self.load)
        await super().start()

    def load(self) -> None:
        """Open the landmarker and run it once, the first time only."""
        with self._load_lock:
            if self.tracks is not None:
                return
            path = self.weights_path()
            if not path.is_file():
                raise WeightsMissing(
                    f"hand landmarker missing: no {path}; run '{FETCH_COMMAND} hands' (it builds it from the "
                    f"mediapipe 0.10.21 wheel on PyPI into the model cache), or set FRAMEFLOW_GESTURE_WEIGHTS "
                    f"to a hand_landmarker.task file"
                )
            hold = self.settings.gesture_hold_frames
            tracks = CameraTracks(
                path.read_bytes(),
                max_hands=self.settings.max_hands,
                held=lambda: HeldGestures(hold),
                max_cameras=self.settings.gesture_max_cameras,
            )
            tracks.detect_still(np.full((480, 640, 3), 114, dtype=np.uint8))  # the first call's one-off costs
            self.tracks = tracks
        logger.info("%s loaded on cpu.", self.model_name)

    def _go_offline(self) -> None:
        super()._go_offline()
        with self._load_lock:
            if self.tracks is not None:
                self.tracks.close()
                self.tracks = None

    # -- frames ----------------------------------------------------------------------------
    def process_batch(self, frames: list[dict[bytes, bytes]]) -> list[dict | BaseException | None]:
        """Each frame in turn, a camera's in timestamp order (its tracker needs them so)."""
        self.load()  # a no-op once start() loaded it
        outcomes: list[dict | BaseException | None] = [None] * len(frames)
        order = sorted(range(len(frames)), key=lambda position: _timestamp_us(frames[position]))
        for position in order:
            try:
                outcomes[position] = self.detect(frames[position])
            except UnprocessableFrame as error:
                outcomes[position] = error
        return outcomes

    def detect(self, frame: dict[bytes, bytes]) -> dict[str, Any]:
        """The result of one frame (its camera's tracker and held gestures move on)."""
        assert self.tracks is not None, "load() first"
        picture = np.asarray(decode_frame_image(frame))
        camera_id = frame.get(b"camera_id", b"").decode("utf-8", "replace")
        hands, track = self.tracks.detect(camera_id, picture, _timestamp_us(frame))
        listed = [_hand_fields(hand) for hand in hands]
        gestures = [self._gesture(hand, fields["box"]) for hand, fields in zip(hands, listed, strict=True)]
        named = [g for g in gestures if g["label"] != NO_GESTURE]
        events = track.held.observe((g["label"], g["hand"]) for g in named) if track is not None else []
        return {
            "hands_detected": len(hands),
            "hands": listed,
            "gestures": named,
            "gesture": max(named, key=lambda g: g["confidence"])["label"] if named else NO_GESTURE,
            "events": events,
            "tracked": track is not None,
            "image_width": int(picture.shape[1]),
            "image_height": int(picture.shape[0]),
            "model": self.model_name,
        }

    def _gesture(self, hand: Hand, box: list[float]) -> dict[str, Any]:
        label, confidence = self.classifier.classify(hand_pose(hand.world, hand.pixels))
        return {"label": label, "hand": hand.handedness, "confidence": round(confidence, 3), "box": box}


def _hand_fields(hand: Hand) -> dict[str, Any]:
    low, high = hand.pixels.min(axis=0), hand.pixels.max(axis=0)
    return {
        "handedness": hand.handedness,
        "score": round(hand.score, 4),
        "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in hand.pixels],
        "box": [round(float(value), 1) for value in (*low, *high)],
    }


def _timestamp_us(frame: dict[bytes, bytes]) -> int:
    """The frame's capture time (its ISO-8601 ``timestamp``) in microseconds; now when it has none."""
    try:
        moment = datetime.fromisoformat(frame[b"timestamp"].decode())
    except (KeyError, ValueError, UnicodeDecodeError):
        return time.time_ns() // 1000
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def build(settings: ModelSettings | None = None) -> GestureDetectionProcessor:
    return GestureDetectionProcessor(
        capabilities=CAPABILITIES,
        result_stream=RESULT_STREAM,
        settings=settings,
        **options_from_env("gesture-detection-1", 5),
    )


processor = build()
serve_with_dramatiq(processor)

if __name__ == "__main__":
    run_until_signalled(processor)
