"""The model processors' configuration, read from the environment in this one place.

(The core's own variables, ``FRAMEFLOW_MODEL_DIR`` among them, are in :mod:`pipeline.settings`.)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

#: The object detectors ``FRAMEFLOW_OBJECT_MODEL`` may name (the first is the default).
OBJECT_MODELS = ("ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn")


def _number(env: Mapping[str, str], name: str, default: float, kind: type = float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}") from None


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={raw!r} is not a flag: use 1 or 0")


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Every environment variable the model processors read, with its default.

    Attributes:
      device: ``FRAMEFLOW_DEVICE`` (``cuda``, ``cuda:1``, ``cpu``); ``None``: CUDA when available, else the CPU.
      half: ``FRAMEFLOW_HALF`` (1/0); ``None``: half precision on a GPU, full precision on the CPU.
      torch_threads: ``FRAMEFLOW_TORCH_THREADS``, torch's intra-op threads; ``None``: torch's default.
      max_batch: ``FRAMEFLOW_MAX_BATCH``, frames per model call at most (and never more than the capacity).
      max_wait_ms: ``FRAMEFLOW_MAX_WAIT_MS``, how long a batch's first frame waits for others.
      object_model: ``FRAMEFLOW_OBJECT_MODEL``, one of :data:`OBJECT_MODELS`.
      object_weights: ``FRAMEFLOW_OBJECT_WEIGHTS``, a checkpoint (state dict) of that model; ``None``:
        torchvision's COCO weights from its cache (``$TORCH_HOME/hub/checkpoints``).
      object_score_threshold: ``FRAMEFLOW_OBJECT_SCORE_THRESHOLD``, detections below it are dropped.
      face_weights: ``FRAMEFLOW_FACE_WEIGHTS``, a directory holding ``pnet.pt``, ``rnet.pt``, ``onet.pt``;
        ``None``: ``<model cache>/mtcnn``, filled by ``frameflow models fetch``.
      face_score_threshold: ``FRAMEFLOW_FACE_SCORE_THRESHOLD``, the last stage's (O-Net's) threshold.
      face_min_size: ``FRAMEFLOW_FACE_MIN_SIZE``, the smallest face looked for, in pixels.
      gesture_weights: ``FRAMEFLOW_GESTURE_WEIGHTS``, a ``hand_landmarker.task`` file; ``None``:
        ``<model cache>/hand_landmarker/hand_landmarker.task``, built by ``frameflow models fetch``.
      gesture_hold_frames: ``FRAMEFLOW_GESTURE_HOLD_FRAMES``, consecutive frames a gesture is seen
        before ``gesture_started`` (and missed before ``gesture_ended``).
      gesture_rules: ``FRAMEFLOW_GESTURE_RULES``, a JSON file of extra gesture rules
        (:mod:`workers.hand_gestures`).
      max_hands: ``FRAMEFLOW_MAX_HANDS``, hands looked for in a frame.
      gesture_max_cameras: ``FRAMEFLOW_GESTURE_MAX_CAMERAS``, cameras an instance tracks at once
        (about 50 MB each); the least recently seen is forgotten past it.
    """

    device: str | None = None
    half: bool | None = None
    torch_threads: int | None = None
    max_batch: int = 8
    max_wait_ms: float = 10.0
    object_model: str = OBJECT_MODELS[0]
    object_weights: str | None = None
    object_score_threshold: float = 0.5
    face_weights: str | None = None
    face_score_threshold: float = 0.7
    face_min_size: int = 20
    gesture_weights: str | None = None
    gesture_hold_frames: int = 3
    gesture_rules: str | None = None
    max_hands: int = 2
    gesture_max_cameras: int = 16

    def __post_init__(self) -> None:
        if self.object_model not in OBJECT_MODELS:
            raise ValueError(f"unknown object model {self.object_model!r}: choose one of {', '.join(OBJECT_MODELS)}")
        if self.max_batch < 1:
            raise ValueError("FRAMEFLOW_MAX_BATCH must be at least 1")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError("FRAMEFLOW_TORCH_THREADS must be at least 1")
        if min(self.gesture_hold_frames, self.max_hands, self.gesture_max_cameras) < 1:
            raise ValueError(
                "FRAMEFLOW_GESTURE_HOLD_FRAMES, FRAMEFLOW_MAX_HANDS and FRAMEFLOW_GESTURE_MAX_CAMERAS "
                "must be at least 1"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ModelSettings:
        env = os.environ if env is None else env
        threads = env.get("FRAMEFLOW_TORCH_THREADS")
        return cls(
            device=env.get("FRAMEFLOW_DEVICE") or None,
            half=_flag(env, "FRAMEFLOW_HALF"),
            torch_threads=int(_number(env, "FRAMEFLOW_TORCH_THREADS", 0, int)) if threads else None,
            max_batch=int(_number(env, "FRAMEFLOW_MAX_BATCH", cls.max_batch, int)),
            max_wait_ms=_number(env, "FRAMEFLOW_MAX_WAIT_MS", cls.max_wait_ms),
            object_model=env.get("FRAMEFLOW_OBJECT_MODEL") or cls.object_model,
            object_weights=env.get("FRAMEFLOW_OBJECT_WEIGHTS") or None,
            object_score_threshold=_number(env, "FRAMEFLOW_OBJECT_SCORE_THRESHOLD", cls.object_score_threshold),
            face_weights=env.get("FRAMEFLOW_FACE_WEIGHTS") or None,
            face_score_threshold=_number(env, "FRAMEFLOW_FACE_SCORE_THRESHOLD", cls.face_score_threshold),
            face_min_size=int(_number(env, "FRAMEFLOW_FACE_MIN_SIZE", cls.face_min_size, int)),
            gesture_weights=env.get("FRAMEFLOW_GESTURE_WEIGHTS") or None,
            gesture_hold_frames=int(_number(env, "FRAMEFLOW_GESTURE_HOLD_FRAMES", cls.gesture_hold_frames, int)),
            gesture_rules=env.get("FRAMEFLOW_GESTURE_RULES") or None,
            max_hands=int(_number(env, "FRAMEFLOW_MAX_HANDS", cls.max_hands, int)),
            gesture_max_cameras=int(_number(env, "FRAMEFLOW_GESTURE_MAX_CAMERAS", cls.gesture_max_cameras, int)),
        )
