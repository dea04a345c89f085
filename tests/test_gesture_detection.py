"""The gesture processor: the hand landmarker built by ``frameflow models fetch hands`` from the
pinned mediapipe wheel, and gestures named on real photos (``tests/data/gestures``, see its README).
"""

from __future__ import annotations

import collections
import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import BadSetting, WeightsMissing
from pipeline.tools.hand_model import TASK_MEMBERS, TASK_SHA256, fetch_hand_landmarker
from pipeline.tools.models import ModelFetchError

from .model_support import hand_landmarker_task, picture_frame

pytest.importorskip("mediapipe", reason="the gesture processor needs mediapipe: pip install -e '.[gestures]'")
skimage_data = pytest.importorskip("skimage.data", reason="test pictures come from scikit-image (the dev extra)")

from workers.gesture_detection import CAPABILITIES, RESULT_STREAM, GestureDetectionProcessor  # noqa: E402
from workers.settings import ModelSettings  # noqa: E402

PHOTOS = Path(__file__).resolve().parent / "data" / "gestures"
#: The photos' classes; ``none`` holds hands making none of the other three.
CLASSES = ("call", "four", "rock", "none")


def processor(weights: Path, **settings: object) -> GestureDetectionProcessor:
    return GestureDetectionProcessor(
        processor_id="gesture-detection-test",
        capabilities=CAPABILITIES,
        orchestrator_url="",
        result_stream=RESULT_STREAM,
        settings=ModelSettings(gesture_weights=str(weights), **settings),  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def gestures() -> Iterator[GestureDetectionProcessor]:
    detector = processor(hand_landmarker_task())
    detector.load()
    yield detector
    detector._go_offline()


def photo_frames() -> list[tuple[str, dict[bytes, bytes]]]:
    """Each photo as a frame of a camera of its own, with its class."""
    frames = []
    for index, path in enumerate(sorted(PHOTOS.glob("*/*.jpg"))):
        frame = picture_frame(np.asarray(Image.open(path).convert("RGB")), "JPEG", frame_id=path.stem)
        frame[b"camera_id"] = f"photo-{index}".encode()
        frames.append((path.parent.name, frame))
    return frames


# -- the weights ---------------------------------------------------------------------------------


def test_models_fetch_builds_the_hand_landmarker_task_from_the_pinned_wheel() -> None:
    task = hand_landmarker_task()
    assert hashlib.sha256(task.read_bytes()).hexdigest() == TASK_SHA256
    with zipfile.ZipFile(task) as archive:
        assert sorted(archive.namelist()) == sorted(TASK_MEMBERS)
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    assert "Apache License" in (task.parent / "LICENSE.mediapipe.txt").read_text()


def test_fetch_refuses_a_mediapipe_wheel_whose_models_are_not_the_known_ones(tmp_path: Path) -> None:
    wheel = tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, _ in TASK_MEMBERS.values():
            archive.writestr(member, b"not the model")
    with pytest.raises(ModelFetchError, match=r"palm_detection_full\.tflite in .* does not have the expected SHA-256"):
        fetch_hand_landmarker(tmp_path / "cache", wheel=wheel)
    assert not (tmp_path / "cache" / "hand_landmarker" / "hand_landmarker.task").exists()


def test_missing_hand_landmarker_names_the_command_to_run(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissing, match=r"^hand landmarker missing: no .*; run 'frameflow models fetch hands'"):
        processor(tmp_path / "nowhere.task").load()


# -- gestures ------------------------------------------------------------------------------------


def test_at_least_16_of_the_20_photos_get_their_gesture(gestures: GestureDetectionProcessor) -> None:
    labelled = photo_frames()
    results = gestures.process_batch([frame for _, frame in labelled])
    confusion: collections.Counter[tuple[str, str]] = collections.Counter()
    for (truth, _), result in zip(labelled, results, strict=True):
        assert isinstance(result, dict), result
        # The photos' "none" is "none of call, four, rock": a hand making another gesture is one.
        found = result["gesture"] if result["gesture"] in CLASSES else "none"
        confusion[truth, found] += 1
    matrix = "\n".join(
        f"{truth:>5} " + " ".join(f"{confusion[truth, found]:>5}" for found in CLASSES) for truth in CLASSES
    )
    correct = sum(confusion[label, label] for label in CLASSES)
    assert correct >= 16, f"{correct}/20 right; rows: truth, columns: {' '.join(CLASSES)}\n{matrix}"


def test_every_hand_has_21_landmarks_inside_its_box(gestures: GestureDetectionProcessor) -> None:
    (_, frame) = next(item for item in photo_frames() if item[0] == "rock")
    result = gestures.process_batch([frame])[0]
    assert isinstance(result, dict) and result["hands_detected"] == 1
    (hand,) = result["hands"]
    assert hand["handedness"] in ("Left", "Right") and hand["score"] > 0.5
    x1, y1, x2, y2 = hand["box"]
    assert len(hand["landmarks"]) == 21
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in hand["landmarks"])
    (gesture,) = result["gestures"]
    assert gesture == {
        "label": "rock",
        "hand": hand["handedness"],
        "confidence": gesture["confidence"],
        "box": [x1, y1, x2, y2],
    }
    assert 0.5 < gesture["confidence"] <= 1


def test_the_astronaut_makes_no_gesture(gestures: GestureDetectionProcessor) -> None:
    result = gestures.process_batch([picture_frame(skimage_data.astronaut(), "JPEG")])[0]
    assert isinstance(result, dict)
    assert (result["hands_detected"], result["gestures"], result["gesture"], result["events"]) == (0, [], "none", [])


def test_rules_from_a_json_file_name_gestures_before_the_built_in_ones(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps([{"label": "horns", "fingers": {"index": True, "middle": False, "ring": False, "pinky": True}}])
    )
    detector = processor(hand_landmarker_task(), gesture_rules=str(rules))
    detector.load()
    try:
        (_, frame) = next(item for item in photo_frames() if item[0] == "rock")
        assert detector.process_batch([frame])[0]["gesture"] == "horns"  # type: ignore[index]
    finally:
        detector._go_offline()


def test_a_malformed_rules_file_is_one_clear_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"label": "six", "fingers": {"toe": True}}]))
    with pytest.raises(BadSetting, match=r"FRAMEFLOW_GESTURE_RULES=.*rules\.json: gesture rule 'six': unknown fingers"):
        processor(hand_landmarker_task(), gesture_rules=str(rules))


# -- per-camera state ----------------------------------------------------------------------------


def test_a_camera_idle_past_its_reset_time_starts_afresh_and_others_keep_theirs() -> None:
    from workers.hand_tracking import CameraTracks
    from workers.held_gestures import HeldGestures

    model = hand_landmarker_task().read_bytes()
    for idle_reset_s, expected_resets, left in ((3600.0, 2, ["porch", "garden"]), (0.0, 4, ["garden"])):
        tracks = CameraTracks(model, max_hands=1, held=lambda: HeldGestures(2), idle_reset_s=idle_reset_s)
        try:
            first = tracks.track("porch")
            tracks.track("garden")
            again = tracks.track("porch")
            tracks.track("garden")
            assert (again is first) == (expected_resets == 2)  # kept while active, new once idle too long
            assert tracks.resets == expected_resets
            assert tracks.cameras == left  # an idle camera's tracker (50 MB) is closed, not kept
        finally:
            tracks.close()


def test_past_max_cameras_the_least_recently_seen_camera_is_forgotten() -> None:
    from workers.hand_tracking import CameraTracks
    from workers.held_gestures import HeldGestures

    tracks = CameraTracks(hand_landmarker_task().read_bytes(), max_hands=1, held=lambda: HeldGestures(2), max_cameras=2)
    try:
        for camera in ("porch", "garden", "porch", "hall"):
            tracks.track(camera)
        assert tracks.cameras == ["porch", "hall"]
    finally:
        tracks.close()


def test_a_frame_older_than_its_cameras_last_is_detected_without_tracking(
    gestures: GestureDetectionProcessor,
) -> None:
    (_, frame) = next(item for item in photo_frames() if item[0] == "rock")
    newer = {**frame, b"camera_id": b"late", b"timestamp": b"2026-01-01T00:00:01+00:00"}
    older = {**frame, b"camera_id": b"late", b"timestamp": b"2026-01-01T00:00:00+00:00"}
    first = gestures.process_batch([newer])[0]
    second = gestures.process_batch([older])[0]
    assert isinstance(first, dict) and isinstance(second, dict)
    assert (first["tracked"], second["tracked"]) == (True, False)
    assert second["gesture"] == first["gesture"] == "rock"


def test_gesture_results_map_to_mqtt_observations_with_the_readmes_mapping(
    gestures: GestureDetectionProcessor,
) -> None:
    """A hand making a gesture is one observation of it; a hand making none is no observation."""
    from pipeline.domain.results import result_fields
    from pipeline.mqtt.mapping import ResultMapping

    rule = {"items": "gestures", "label_key": "label", "score_key": "confidence"}
    mapping = ResultMapping.from_dict({"streams": {RESULT_STREAM: rule}})
    identity = {"frame_id": "f-1", "camera_id": "porch", "timestamp": "2026-01-01T00:00:00+00:00"}
    by_stem = {frame[b"frame_id"].decode(): frame for _, frame in photo_frames()}
    seen = {}
    for stem in ("09a619ab-cdf7-4a66-911f-347113f050f1", "00af1db1-7c86-4e9b-9383-1fbd06c3492d"):
        result = gestures.process_batch([by_stem[stem]])[0]
        assert isinstance(result, dict) and result["hands_detected"] == 1, result
        fields = result_fields(result, identity, processor_id="gesture-detection-1", latency_ms=1.0)
        seen[stem] = [(o.label, len(o.detections)) for o in mapping.observations(RESULT_STREAM, fields)]
    assert list(seen.values()) == [[("rock", 1)], []], seen
