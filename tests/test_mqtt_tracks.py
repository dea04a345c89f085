"""The bridge's pure parts: tracks (the debounce state machine), the ack ledger, the mapping, the settings."""

from __future__ import annotations

import json

import pytest

from pipeline.domain.kept_images import wants_snapshot
from pipeline.domain.keys import snapshot_key
from pipeline.mqtt.errors import BadResult, MqttConfigError
from pipeline.mqtt.ledger import AckLedger
from pipeline.mqtt.mapping import ResultMapping
from pipeline.mqtt.settings import MqttSettings, MqttUrl
from pipeline.mqtt.tracks import Detection, Observation, Tracker
from tests.mqtt_harness import face_fields

GAP = 2.0


def seen(frame: str, time: float, *scores: float, camera: str = "door", label: str = "person") -> Observation:
    detections = tuple(Detection(label, score, (0.0, 0.0, 10.0, 10.0)) for score in scores)
    return Observation(camera, label, frame, time, detections)


# -- tracks ------------------------------------------------------------------------------------
def test_a_person_in_view_is_one_track_with_updates_only_when_something_changes() -> None:
    tracker = Tracker(GAP)
    events = tracker.observe(seen("f1", 100.0, 0.6), clock=0.0)
    assert [event.type for event in events] == ["new"] and events[0].improved and events[0].count_changed
    for index in range(2, 900):  # a minute at 15 fps, the same score: nothing to say
        assert tracker.observe(seen(f"f{index}", 100.0 + index / 15, 0.6), clock=index / 15) == []
    [better] = tracker.observe(seen("f900", 160.0, 0.8), clock=60.0)
    assert (better.type, better.improved, better.count_changed) == ("update", True, False)
    [two] = tracker.observe(seen("f901", 160.1, 0.7, 0.5), clock=60.1)
    assert (two.type, two.after.count, two.after.top_score, two.after.top_frame_id) == ("update", 2, 0.8, "f900")
    assert len({event.after.id for event in (*events, better, two)}) == 1


def test_a_track_ends_after_the_gap_of_silence_and_its_count_goes_back_to_zero() -> None:
    tracker = Tracker(GAP)
    tracker.observe(seen("f1", 100.0, 0.9), clock=10.0)
    tracker.observe(seen("f2", 100.5, 0.9), clock=10.5)
    assert tracker.expire(clock=12.4) == []  # 1.9 s of silence: not yet
    [end] = tracker.expire(clock=12.6)
    assert (end.type, end.after.count, end.after.end_time, end.after.frame_id) == ("end", 0, 100.5, "f2")
    assert end.count_changed and not end.after.active and len(tracker) == 0
    [again] = tracker.observe(seen("f3", 103.0, 0.9), clock=13.0)
    assert again.type == "new" and again.after.id != end.after.id


def test_a_gap_in_the_frames_own_times_splits_tracks_even_when_they_arrive_together() -> None:
    """A backlog replayed after an outage arrives in a burst: the frames' times decide."""
    tracker = Tracker(GAP)
    tracker.observe(seen("f1", 100.0, 0.9), clock=50.0)
    events = tracker.observe(seen("f2", 105.0, 0.9), clock=50.001)
    assert [event.type for event in events] == ["end", "new"]
    assert events[0].after.end_time == 100.0 and events[1].after.start_time == 105.0
    assert tracker.observe(seen("late", 104.0, 0.9), clock=50.002) == []  # a late frame moves no time back
    assert tracker.active()[0].last_time == 105.0


def test_cameras_and_labels_are_separate_tracks() -> None:
    tracker = Tracker(GAP)
    kinds = [
        tracker.observe(seen("a", 1.0, 0.9, camera="door", label="person"), 0.0),
        tracker.observe(seen("b", 1.0, 0.9, camera="door", label="car"), 0.0),
        tracker.observe(seen("c", 1.0, 0.9, camera="yard", label="person"), 0.0),
    ]
    assert [[event.type for event in events] for events in kinds] == [["new"], ["new"], ["new"]]
    assert len(tracker) == 3 and tracker.observe(seen("d", 1.0), 0.0) == []  # no detections: nothing


# -- the ledger --------------------------------------------------------------------------------
def test_the_latest_entry_of_a_live_track_stays_pending_until_the_track_ends() -> None:
    ledger = AckLedger()
    first, second, other = ("faces:detected", "1-0"), ("faces:detected", "2-0"), ("faces:detected", "3-0")
    ledger.begin(first)
    assert ledger.hold(("door", "face"), first) == []
    assert ledger.finish(first) == []  # held by the track: its end will come from it
    ledger.begin(second)
    assert ledger.hold(("door", "face"), second) == [first]  # superseded
    ledger.hold(("door", "person"), second)  # the same entry, a second label
    assert ledger.finish(second) == []
    ledger.begin(other)
    assert ledger.finish(other) == [other]  # caused nothing that lasts
    assert ledger.end(("door", "face")) == [] and ledger.held() == 1
    assert ledger.end(("door", "person")) == [second] and ledger.held() == 0


# -- the mapping -------------------------------------------------------------------------------
def test_the_default_mapping_reads_frameflows_own_results() -> None:
    mapping = ResultMapping.default()
    [face] = mapping.observations("faces:detected", face_fields("door", "f1", [0.9]))
    assert (face.camera, face.label, face.frame_id, face.count, face.best.box) == (
        "door",
        "face",
        "f1",
        1,
        (10, 8, 30, 32),
    )
    objects = [
        {"label": "person", "label_id": 1, "score": 0.8, "box": [1, 2, 3, 4]},
        {"label": "person", "label_id": 1, "score": 0.6, "box": [5, 6, 7, 8]},
        {"label": "traffic light", "label_id": 10, "score": 0.7, "box": [0, 0, 1, 1]},
    ]
    fields = {
        "frame_id": "o1",
        "camera_id": "yard",
        "timestamp": "2030-01-01T00:00:00+00:00",
        "objects": json.dumps(objects),
    }
    people, lights = mapping.observations("objects:detected", fields)
    assert (people.label, people.count, people.best.score) == ("person", 2, 0.8)
    assert (lights.label, lights.count, lights.time) == ("traffic_light", 1, 1893456000.0)


def test_minimum_scores_per_label_and_a_mapping_from_yaml(tmp_path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(
        "streams:\n"
        "  gestures:detected:\n"
        "    items: hands\n"
        "    label_key: gesture\n"
        "    score_key: confidence\n"
        "    box_key: bbox\n"
        "min_score:\n"
        "  wave: 0.9\n"
        '  "*": 0.5\n'
    )
    mapping = ResultMapping.from_file(str(path))
    hands = [
        {"gesture": "wave", "confidence": 0.85, "bbox": [0, 0, 1, 1]},
        {"gesture": "Thumbs Up", "confidence": 0.6},
        {"gesture": "point", "confidence": 0.4},
    ]
    fields = {
        "frame_id": "g1",
        "camera_id": "hall",
        "captured_at": "2030-01-01T00:00:00+00:00",
        "hands": json.dumps(hands),
    }
    [thumbs] = mapping.observations("gestures:detected", fields)  # wave under 0.9, point under 0.5
    assert (thumbs.label, thumbs.best.box) == ("thumbs_up", None)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"frame_id": "f", "camera_id": "door", "timestamp": "2030-01-01T00:00:00", "faces": "{"}, "is not JSON"),
        ({"frame_id": "f", "camera_id": "a/b", "timestamp": "2030-01-01T00:00:00", "faces": "[]"}, "not a camera id"),
        ({"frame_id": "f", "camera_id": "door", "faces": "[]"}, "no ISO-8601 time"),
        ({"frame_id": "f", "camera_id": "door", "timestamp": "2030-01-01T00:00:00"}, "no 'faces' field"),
        (
            {
                "frame_id": "f",
                "camera_id": "door",
                "timestamp": "2030-01-01T00:00:00",
                "faces": '[{"score": 0.9, "box": [1]}]',
            },
            "is not four numbers",
        ),
    ],
)
def test_bad_results_raise_with_the_reason(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(BadResult, match=reason):
        ResultMapping.default().observations("faces:detected", fields)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({}, "needs 'streams'"),
        ({"streams": {"s": {"items": "x"}}}, "exactly one of label or label_key"),
        ({"streams": {"s": {"items": "x", "label": "a/b"}}}, "is not"),
        ({"streams": {"s": {"items": "x", "label": "a", "colour": "red"}}}, "unknown key"),
        ({"streams": {"s": {"items": "x", "label": "a"}}, "min_score": {"a": 2}}, "not a number from 0 to 1"),
    ],
)
def test_a_bad_mapping_is_one_clear_error(data: dict, reason: str) -> None:
    with pytest.raises(MqttConfigError, match=reason):
        ResultMapping.from_dict(data)


# -- settings ----------------------------------------------------------------------------------
def test_mqtt_urls_are_parsed_and_masked(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    url = MqttUrl.parse(f"mqtts://bridge:s%40cret@broker.lan?ca={ca}")
    assert (url.host, url.port, url.tls, url.username, url.password, url.ca_file) == (
        "broker.lan", 8883, True, "bridge", "s@cret", str(ca),
    )  # fmt: skip
    assert "cret" not in str(url) and "cret" not in repr(url) and url.masked.startswith("mqtts://bridge:***@broker.lan")
    assert MqttUrl.parse("mqtt://127.0.0.1").port == 1883
    for bad, reason in [
        ("http://x", "scheme"),
        ("mqtt://", "no host"),
        ("mqtt://h?ca=/x", "needs mqtts"),
        ("mqtts://u:pw@h?ca=/no/such/ca.pem", "does not exist"),
        ("mqtt://h?qos=2", "unknown parameter"),
    ]:
        with pytest.raises(MqttConfigError, match=reason) as error:
            MqttUrl.parse(bad)
        assert "pw" not in str(error.value)


def test_settings_come_from_the_environment_then_the_options() -> None:
    env = {"MQTT_URL": "mqtt://m:1884", "FRAMEFLOW_MQTT_PREFIX": "house", "FRAMEFLOW_MQTT_GAP_S": "3"}
    settings = MqttSettings.from_env(env, gap_s=None, discovery_prefix="")
    assert (settings.url.port, settings.prefix, settings.gap_s, settings.discovery_prefix) == (1884, "house", 3.0, "")
    with pytest.raises(MqttConfigError, match="FRAMEFLOW_MQTT_GAP_S='soon' is not a number"):
        MqttSettings.from_env({"FRAMEFLOW_MQTT_GAP_S": "soon"})
    with pytest.raises(MqttConfigError, match="one topic level"):
        MqttSettings.from_env({}, prefix="a/b")


# -- kept images (the processor's side of snapshots) -------------------------------------------
def test_processors_keep_images_only_of_frames_whose_result_found_something() -> None:
    assert wants_snapshot({"faces_detected": 2, "faces": []})
    assert not wants_snapshot({"faces_detected": 0, "faces": []})
    assert not wants_snapshot({"objects_detected": True, "bytes": 12})
    assert snapshot_key("frameflow", "abc") == "frameflow:snapshot:{abc}"
