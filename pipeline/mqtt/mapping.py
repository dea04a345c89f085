"""Which results become detections: declared per result stream, not coded.

A mapping says, for each result stream, which field holds the list of detections and where each
detection keeps its label, score and box, plus a minimum score per label. As YAML
(``FRAMEFLOW_MQTT_MAPPING`` / ``--mapping``)::

    streams:
      faces:detected:          # each entry of the `faces` JSON list is a `face`
        items: faces
        label: face
      objects:detected:        # each entry of `objects` is labelled by its own `label` key
        items: objects
        label_key: label
    min_score:
      face: 0.8
      "*": 0.5                 # every other label

Per stream, also ``score_key`` (``score``), ``box_key`` (``box``: x1, y1, x2, y2), ``camera_field``
(``camera_id``) and ``time_field`` (``captured_at``, ISO-8601, else the result's ``timestamp``).
Labels are lower-cased, spaces become ``_`` (``traffic light`` → ``traffic_light``), and must then be
``[a-z0-9][a-z0-9_-]*``: they name topics and Home Assistant entities. Anyone who can write to a
result stream can write anything there, so every value is checked; an entry that does not fit
raises :class:`~pipeline.mqtt.errors.BadResult` with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pipeline.config_files import read_yaml_file
from pipeline.domain.kept_images import SNAPSHOT_REF_FIELD

from .errors import BadResult, MqttConfigError
from .tracks import Box, Detection, Observation

#: A camera id, as a producer accepts it (pipeline.domain.frames) — safe in a topic level.
CAMERA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
LABEL = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

#: Detections per entry at most: a result with more is not a camera frame's.
MAX_DETECTIONS = 1000


def normalise_label(raw: Any) -> str:
    """``raw`` as a label (lower case, blanks as ``_``), or :class:`BadResult`."""
    if not isinstance(raw, str):
        raise BadResult(f"label {raw!r} is not text")
    label = "_".join(raw.strip().lower().split())
    if not LABEL.fullmatch(label):
        raise BadResult(f"label {raw[:64]!r} is not [a-z0-9][a-z0-9_-]* (after lower-casing)")
    return label


@dataclasses.dataclass(frozen=True)
class StreamRule:
    """How one result stream's entries hold their detections (see the module docstring)."""

    stream: str
    items: str
    label: str | None = None
    label_key: str | None = None
    score_key: str = "score"
    box_key: str = "box"
    camera_field: str = "camera_id"
    time_field: str = "captured_at"

    def __post_init__(self) -> None:
        if (self.label is None) == (self.label_key is None):
            raise MqttConfigError(f"mapping of {self.stream}: give exactly one of label or label_key")
        if self.label is not None:
            try:
                object.__setattr__(self, "label", normalise_label(self.label))
            except BadResult as error:
                raise MqttConfigError(f"mapping of {self.stream}: {error}") from None


@dataclasses.dataclass(frozen=True)
class ResultMapping:
    """Stream rules and minimum scores; :meth:`observations` applies them to one entry."""

    rules: Mapping[str, StreamRule]
    min_scores: Mapping[str, float] = dataclasses.field(default_factory=dict)
    default_min_score: float = 0.0

    @property
    def streams(self) -> list[str]:
        return list(self.rules)

    def min_score(self, label: str) -> float:
        return self.min_scores.get(label, self.default_min_score)

    def observations(self, stream: str, fields: Mapping[str, str]) -> list[Observation]:
        """One observation per label found in the entry, detections under their label's minimum dropped.

        Raises:
          BadResult: no camera, no frame id, the items field missing or not a JSON list, a detection
            without a usable label, score or box.
        """
        rule = self.rules[stream]
        camera = fields.get(rule.camera_field, "")
        if not CAMERA.fullmatch(camera):
            raise BadResult(f"{rule.camera_field} {camera[:64]!r} is not a camera id")
        frame_id = fields.get("frame_id", "")
        if not frame_id or len(frame_id) > 256:
            raise BadResult("no usable frame_id")
        raw_items = fields.get(rule.items)
        if raw_items is None:
            raise BadResult(f"no {rule.items!r} field")
        try:
            items = json.loads(raw_items)
        except ValueError:
            raise BadResult(f"field {rule.items!r} is not JSON") from None
        if not isinstance(items, list) or len(items) > MAX_DETECTIONS:
            raise BadResult(f"field {rule.items!r} is not a list of at most {MAX_DETECTIONS} detections")
        time = _time_of(fields, rule.time_field)
        by_label: dict[str, list[Detection]] = {}
        for item in items:
            detection = self._detection(rule, item)
            if detection.score >= self.min_score(detection.label):
                by_label.setdefault(detection.label, []).append(detection)
        ref = fields.get(SNAPSHOT_REF_FIELD) or None
        return [
            Observation(camera, label, frame_id, time, tuple(detections), ref)
            for label, detections in sorted(by_label.items())
        ]

    def _detection(self, rule: StreamRule, item: Any) -> Detection:
        if not isinstance(item, dict):
            raise BadResult(f"a detection in {rule.items!r} is not an object")
        label = rule.label if rule.label is not None else normalise_label(item.get(rule.label_key))
        assert label is not None
        score = item.get(rule.score_key)
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise BadResult(f"score {str(score)[:32]!r} of a {label} is not a number from 0 to 1")
        return Detection(label, float(score), _box(item.get(rule.box_key), label))

    # -- building one ------------------------------------------------------------------------
    @classmethod
    def default(cls) -> ResultMapping:
        """frameflow's own result streams (workers/face_detection.py, workers/object_detection.py)."""
        return cls.from_dict(
            {
                "streams": {
                    "faces:detected": {"items": "faces", "label": "face"},
                    "objects:detected": {"items": "objects", "label_key": "label"},
                }
            }
        )

    @classmethod
    def from_file(cls, path: str) -> ResultMapping:
        data = read_yaml_file(path, "mapping file", MqttConfigError)
        try:
            return cls.from_dict(data)
        except MqttConfigError as error:
            raise MqttConfigError(f"mapping file {path}: {error}") from None

    @classmethod
    def from_dict(cls, data: Any) -> ResultMapping:
        if not isinstance(data, dict) or not isinstance(data.get("streams"), dict) or not data["streams"]:
            raise MqttConfigError("a mapping needs 'streams': a map of result stream to its rule")
        unknown = set(data) - {"streams", "min_score"}
        if unknown:
            raise MqttConfigError(f"unknown mapping key(s): {', '.join(sorted(map(str, unknown)))}")
        fields = {field.name for field in dataclasses.fields(StreamRule)} - {"stream"}
        rules = {}
        for stream, rule in data["streams"].items():
            if not isinstance(rule, dict) or not isinstance(rule.get("items"), str):
                raise MqttConfigError(f"mapping of {stream}: a map with at least 'items' (the detections field)")
            extra = set(rule) - fields
            if extra:
                raise MqttConfigError(f"mapping of {stream}: unknown key(s) {', '.join(sorted(map(str, extra)))}")
            if not all(isinstance(value, str) for value in rule.values()):
                raise MqttConfigError(f"mapping of {stream}: every value is a field name or label (text)")
            rules[str(stream)] = StreamRule(stream=str(stream), **rule)
        min_scores, default = _min_scores(data.get("min_score") or {})
        return cls(rules, min_scores, default)


def _min_scores(raw: Any) -> tuple[dict[str, float], float]:
    if not isinstance(raw, dict):
        raise MqttConfigError("min_score: a map of label to minimum score")
    scores: dict[str, float] = {}
    default = 0.0
    for label, score in raw.items():
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise MqttConfigError(f"min_score of {label}: {score!r} is not a number from 0 to 1")
        if label == "*":
            default = float(score)
            continue
        try:
            scores[normalise_label(label)] = float(score)
        except BadResult as error:
            raise MqttConfigError(f"min_score: {error}") from None
    return scores, default


def _box(raw: Any, label: str) -> Box | None:
    if raw is None:
        return None
    if (
        not isinstance(raw, list)
        or len(raw) != 4
        or not all(isinstance(value, int | float) and not isinstance(value, bool) for value in raw)
        or not all(math.isfinite(value) for value in raw)
    ):
        raise BadResult(f"box of a {label} is not four numbers (x1, y1, x2, y2)")
    x1, y1, x2, y2 = (float(value) for value in raw)
    return (x1, y1, x2, y2)


def _time_of(fields: Mapping[str, str], name: str) -> float:
    """The frame's capture time (``name``, else the result's ``timestamp``) in epoch seconds."""
    for candidate in (name, "timestamp"):
        raw = fields.get(candidate)
        if raw:
            try:
                return datetime.fromisoformat(raw).timestamp()
            except ValueError:
                continue
    raise BadResult(f"no ISO-8601 time in {name!r} or 'timestamp'")
