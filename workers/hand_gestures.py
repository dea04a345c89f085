"""Gestures from a hand's 21 landmarks: which fingers are extended, where they point, and
rules that name the combinations.

It needs no model and no mediapipe: landmarks in, a label out, so the rules can be
read, tested and extended on their own. Landmarks are numbered as MediaPipe numbers
them: 0 the wrist, then four points per finger from its base to its tip (thumb 1-4,
index 5-8, middle 9-12, ring 13-16, pinky 17-20).

**Extension** is measured on the 3-D (world) landmarks, so it does not depend on how
the hand faces the camera:

* a finger (index to pinky) is extended when the line from its knuckle to its tip
  stays close to the line from the wrist to that knuckle: the angle between them is
  about 0-40 degrees for a straight finger and 90-140 for a curled one, the boundary
  being :data:`FINGER_BOUNDARY_DEG`;
* the thumb is extended when it points away from the palm: the angle between the
  thumb (its base joint to its tip) and the palm's width (index knuckle to pinky
  knuckle) is above :data:`THUMB_BOUNDARY_DEG` (a thumb folded across the palm
  points along the palm's width, about 70 degrees; one held out, 110-170).

Each finger gets an extension score in [0, 1] (0.5 on the boundary); a rule's
confidence is the least certain of the fingers it constrains.

**Direction** (``up``/``down``) is read in the picture: the finger's base-to-tip
vector within 45 degrees of vertical.

**Rules** (:data:`DEFAULT_RULES`, first match wins; "any" means the finger may be
either way):

=========== ===== ===== ====== ==== ===== =================
label       thumb index middle ring pinky also
=========== ===== ===== ====== ==== ===== =================
open_palm   ext   ext   ext    ext  ext
four        fold  ext   ext    ext  ext
fist        fold  fold  fold   fold fold
thumbs_up   ext   fold  fold   fold fold  thumb points up
thumbs_down ext   fold  fold   fold fold  thumb points down
pointing_up any   ext   fold   fold fold  index points up
victory     any   ext   ext    fold fold
call        ext   fold  fold   fold ext
rock        any   ext   fold   fold ext
=========== ===== ===== ====== ==== ===== =================

A hand matching none is ``none``. More rules need no code: :func:`load_rules` reads
them from a JSON file (``FRAMEFLOW_GESTURE_RULES``), a list of objects such as
``{"label": "three", "fingers": {"thumb": true, "index": true, "middle": true,
"ring": false, "pinky": false}}`` with an optional ``"pointing": {"index": "up"}``;
they are tried before the built-in ones.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline.errors import BadSetting

#: The fingers, and their four landmarks from base to tip.
FINGERS: dict[str, tuple[int, int, int, int]] = {
    "thumb": (1, 2, 3, 4),
    "index": (5, 6, 7, 8),
    "middle": (9, 10, 11, 12),
    "ring": (13, 14, 15, 16),
    "pinky": (17, 18, 19, 20),
}
WRIST = 0
LANDMARK_COUNT = 21

#: Knuckle-to-tip against wrist-to-knuckle: below it, a finger is extended (see the module docstring).
FINGER_BOUNDARY_DEG = 65.0
FINGER_SPAN_DEG = 25.0  # scores 1 at 40 degrees, 0 at 90
#: Thumb against the palm's width: above it, the thumb is extended.
THUMB_BOUNDARY_DEG = 80.0
THUMB_SPAN_DEG = 30.0  # scores 0 at 50 degrees, 1 at 110

#: The label of a hand no rule matches.
NO_GESTURE = "none"

DIRECTIONS = ("up", "down")


@dataclasses.dataclass(frozen=True)
class HandPose:
    """What the rules look at: each finger's extension score (0 curled .. 1 straight) and its
    direction in the picture (``up``, ``down`` or ``side``)."""

    extension: Mapping[str, float]
    pointing: Mapping[str, str]

    def extended(self, finger: str) -> bool:
        return self.extension[finger] >= 0.5


def hand_pose(world: np.ndarray, image: np.ndarray) -> HandPose:
    """The pose of one hand from its landmarks: ``world`` (21 x 3, metres) and ``image``
    (21 x 2 or more, pixels; y grows downwards)."""
    if world.shape[0] != LANDMARK_COUNT or image.shape[0] != LANDMARK_COUNT:
        raise ValueError(f"a hand has {LANDMARK_COUNT} landmarks")
    extension = {}
    for finger, (base, _, _, tip) in FINGERS.items():
        if finger == "thumb":
            angle = _angle(world[tip] - world[2], world[FINGERS["pinky"][0]] - world[FINGERS["index"][0]])
            extension[finger] = _score(angle - THUMB_BOUNDARY_DEG, THUMB_SPAN_DEG)
        else:
            angle = _angle(world[base] - world[WRIST], world[tip] - world[base])
            extension[finger] = _score(FINGER_BOUNDARY_DEG - angle, FINGER_SPAN_DEG)
    pointing = {finger: _direction(image[tip, :2] - image[base, :2]) for finger, (base, _, _, tip) in FINGERS.items()}
    return HandPose(extension, pointing)


@dataclasses.dataclass(frozen=True)
class GestureRule:
    """A gesture: the fingers it needs extended (True) or folded (False), others free, and
    directions some fingers must point in."""

    label: str
    fingers: Mapping[str, bool]
    pointing: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.label:
            raise ValueError("a gesture rule needs a label")
        unknown = (set(self.fingers) | set(self.pointing)) - set(FINGERS)
        if unknown:
            raise ValueError(f"gesture rule {self.label!r}: unknown fingers {sorted(unknown)}")
        if any(direction not in DIRECTIONS for direction in self.pointing.values()):
            raise ValueError(f"gesture rule {self.label!r}: pointing must be one of {', '.join(DIRECTIONS)}")

    def confidence(self, pose: HandPose) -> float:
        """How surely ``pose`` matches: the least certain constrained finger, 0 when it does not match."""
        if any(pose.pointing[finger] != direction for finger, direction in self.pointing.items()):
            return 0.0
        sureness = [pose.extension[f] if wanted else 1 - pose.extension[f] for f, wanted in self.fingers.items()]
        least = min(sureness, default=1.0)
        return least if least >= 0.5 else 0.0


def _fingers(thumb: bool | None, index: bool, middle: bool, ring: bool, pinky: bool) -> dict[str, bool]:
    states = {"thumb": thumb, "index": index, "middle": middle, "ring": ring, "pinky": pinky}
    return {finger: state for finger, state in states.items() if state is not None}


DEFAULT_RULES: tuple[GestureRule, ...] = (
    GestureRule("open_palm", _fingers(True, True, True, True, True)),
    GestureRule("four", _fingers(False, True, True, True, True)),
    GestureRule("fist", _fingers(False, False, False, False, False)),
    GestureRule("thumbs_up", _fingers(True, False, False, False, False), {"thumb": "up"}),
    GestureRule("thumbs_down", _fingers(True, False, False, False, False), {"thumb": "down"}),
    GestureRule("pointing_up", _fingers(None, True, False, False, False), {"index": "up"}),
    GestureRule("victory", _fingers(None, True, True, False, False)),
    GestureRule("call", _fingers(True, False, False, False, True)),
    GestureRule("rock", _fingers(None, True, False, False, True)),
)


class GestureClassifier:
    """Names a hand's gesture with the first rule that matches (see the module docstring)."""

    def __init__(self, rules: Sequence[GestureRule] = DEFAULT_RULES) -> None:
        self.rules = tuple(rules)

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys([*(rule.label for rule in self.rules), NO_GESTURE]))

    def classify(self, pose: HandPose) -> tuple[str, float]:
        """The gesture's label and confidence; ``none`` (with how surely no rule matched: 1.0) otherwise."""
        for rule in self.rules:
            confidence = rule.confidence(pose)
            if confidence:
                return rule.label, confidence
        return NO_GESTURE, 1.0


def load_rules(path: str | Path) -> list[GestureRule]:
    """The rules in the JSON file ``path`` (see the module docstring); a malformed one raises
    :class:`~pipeline.errors.BadSetting` naming the file and what is wrong."""
    try:
        listed = json.loads(Path(path).read_text())
        if not isinstance(listed, list):
            raise ValueError("expected a list of rules")
        return [
            GestureRule(str(item["label"]), dict(item["fingers"]), dict(item.get("pointing") or {})) for item in listed
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BadSetting(f"FRAMEFLOW_GESTURE_RULES={path}: {error}") from None


def classifier_with(extra_rules_path: str | None) -> GestureClassifier:
    """The built-in rules, preceded by those of ``extra_rules_path`` when given."""
    extra = load_rules(extra_rules_path) if extra_rules_path else []
    return GestureClassifier([*extra, *DEFAULT_RULES])


def _angle(u: np.ndarray, v: np.ndarray) -> float:
    norms = float(np.linalg.norm(u) * np.linalg.norm(v))
    if norms == 0.0:
        return 0.0
    return float(np.degrees(np.arccos(np.clip(float(u @ v) / norms, -1.0, 1.0))))


def _score(margin_deg: float, span_deg: float) -> float:
    """0.5 on the boundary, 1 (or 0) ``span_deg`` past it on the extended (or folded) side."""
    return float(np.clip(0.5 + margin_deg / (2 * span_deg), 0.0, 1.0))


def _direction(vector: np.ndarray) -> str:
    dx, dy = float(vector[0]), float(vector[1])
    if abs(dy) <= abs(dx):
        return "side"
    return "up" if dy < 0 else "down"
