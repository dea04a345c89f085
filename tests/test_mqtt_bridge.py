"""The MQTT bridge against a real Mosquitto and a real Redis: events, counts, snapshots, discovery."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from pipeline import FrameProducer
from pipeline.domain.keys import snapshot_key
from tests.mosquitto import Mosquitto, Subscriber
from tests.mqtt_harness import (
    FACES,
    FakeFaces,
    acked_everything,
    bridge_env,
    bridge_thread,
    face_fields,
    jpeg,
    write_face,
)
from tests.processes import ROOT
from tests.processor_harness import running


@pytest.fixture
def mosquitto(tmp_path: Path):
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def subscriber(mosquitto: Mosquitto):
    subscriber = Subscriber(mosquitto)
    yield subscriber
    subscriber.close()


def test_a_face_is_one_track_new_updates_end_with_counts_and_a_snapshot(
    redis_url, redis_client, mosquitto, subscriber, monkeypatch
) -> None:
    monkeypatch.setenv("FRAMEFLOW_SNAPSHOT_TTL_S", "60")  # the processor keeps images of frames with faces
    processor = FakeFaces(
        processor_id="faces-mqtt-1",
        capabilities=["face_detection"],
        orchestrator_url="",
        redis_url=redis_url,
        result_stream=FACES,
        health_check_interval=0.5,
        capacity=1,  # one frame at a time: results in the order they were sent
    )
    image = jpeg(64, 48)
    scores = [0.81, 0.86, 0.84, 0.84]  # better, then worse (no event), then a second face
    with running(processor, redis_client), bridge_thread(redis_url, mosquitto.url(), gap_s=2.0):
        producer = FrameProducer(redis_url)
        sent = []
        for index, score in enumerate(scores):
            faces = [[score, [8, 6, 40, 30]]] + ([[0.8, [44, 10, 60, 40]]] if index == 3 else [])
            decision = producer.publish(
                camera_id="door",
                image=image,
                capabilities=["face_detection"],
                width=64,
                height=48,
                metadata={"faces": faces},
            )
            sent.append(decision.frame_id)
        producer.close()
        events = subscriber.wait_for(
            lambda: [event for event in subscriber.events() if event["type"] == "end"] and subscriber.events(),
            what="the track's end",
        )
        subscriber.wait_for(lambda: acked_everything(redis_client), what="every result acknowledged")

    assert [event["type"] for event in events] == ["new", "update", "update", "end"]
    assert len({event["id"] for event in events}) == 1  # one track
    new, better, two_faces, end = events
    assert (new["camera"], new["label"], new["before"]) == ("door", "face", None)
    assert new["after"]["frame_id"] == sent[0] and new["after"]["score"] == 0.81 and new["after"]["count"] == 1
    assert new["after"]["box"] == [8, 6, 40, 30] and new["after"]["end_time"] is None
    assert better["after"]["top_score"] == 0.86 and better["before"]["top_score"] == 0.81  # the score improved
    assert two_faces["after"]["frame_id"] == sent[3] and two_faces["after"]["count"] == 2  # frame 3 changed nothing
    assert two_faces["after"]["top_score"] == 0.86
    assert end["after"]["count"] == 0 and end["after"]["end_time"] == end["after"]["last_time"]
    assert end["after"]["start_time"] < end["after"]["end_time"] and not end["after"]["active"]
    assert end["after"]["top_frame_id"] == sent[1] and end["after"]["frame_id"] == sent[3]

    assert subscriber.on("frameflow/door/face") == [b"1", b"2", b"0"]  # counts: 0 -> 1 -> (2) -> 0
    snapshot = Image.open(io.BytesIO(subscriber.latest("frameflow/door/face/snapshot")))
    snapshot.load()
    assert (snapshot.format, snapshot.size) == ("JPEG", (64, 48))
    kept = redis_client.ttl(snapshot_key("frameflow", sent[1]))  # the processor's copy of the best frame
    assert 0 < kept <= 60
    assert subscriber.latest("frameflow/available") == b"offline"  # the bridge stopped cleanly
    assert b"online" in subscriber.on("frameflow/available")


def test_home_assistant_discovery_configs(redis_url, redis_client, mosquitto, subscriber) -> None:
    with bridge_thread(redis_url, mosquitto.url(), gap_s=0.3):
        for camera in ("door", "garden.cam-2"):
            write_face(redis_client, camera, f"{camera}-1", [0.9])
        redis_client.xadd(
            "objects:detected",
            {
                "frame_id": "o-1",
                "camera_id": "door",
                "timestamp": "2030-01-01T00:00:00+00:00",
                "objects": json.dumps([{"label": "traffic light", "score": 0.7, "box": [1, 2, 3, 4]}]),
            },
        )
        configs = subscriber.wait_for(lambda: _configs(subscriber) if len(_configs(subscriber)) == 6 else None)

    unique_ids = [config["unique_id"] for config in configs.values()]
    assert len(set(unique_ids)) == 6
    assert set(configs) == {
        f"homeassistant/{component}/frameflow_{node}/{label}_{suffix}/config"
        for node, label in (("door", "face"), ("garden_cam-2", "face"), ("door", "traffic_light"))
        for component, suffix in (("sensor", "count"), ("binary_sensor", "occupancy"))
    }
    for topic, config in configs.items():
        assert config["availability_topic"] == "frameflow/available"
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
        camera = "garden.cam-2" if "garden" in topic else "door"
        assert config["device"]["identifiers"] == [f"frameflow_{camera.replace('.', '_')}"]
        assert config["state_topic"].startswith(f"frameflow/{camera}/")
    occupancy = configs["homeassistant/binary_sensor/frameflow_door/face_occupancy/config"]
    assert occupancy["device_class"] == "occupancy" and occupancy["state_topic"] == "frameflow/door/face"


def _configs(subscriber: Subscriber) -> dict[str, dict]:
    return {
        topic: json.loads(subscriber.latest(topic))
        for topic in subscriber.topics_seen()
        if topic.startswith("homeassistant/") and subscriber.latest(topic)
    }


def test_forget_removes_a_cameras_entities_and_retained_states(redis_url, redis_client, mosquitto, subscriber) -> None:
    with bridge_thread(redis_url, mosquitto.url(), gap_s=0.3):
        write_face(redis_client, "door", "d-1", [0.9])
        write_face(redis_client, "yard", "y-1", [0.9])
        subscriber.wait_for(
            lambda: len(_configs(subscriber)) == 4 and subscriber.on("frameflow/yard/face") == [b"1", b"0"]
        )
    completed = subprocess.run(
        [sys.executable, "-m", "pipeline.tools.cli", "mqtt", "--mqtt-url", mosquitto.url(), "--forget", "door"],
        cwd=ROOT,
        env=bridge_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert "forgot camera door: 3 retained message(s) cleared" in completed.stdout  # 2 configs and the count
    later = Subscriber(mosquitto)  # what a newcomer (Home Assistant after a restart) is told
    try:
        later.wait_for(lambda: "frameflow/yard/face" in later.topics_seen(), what="the retained states")
        retained = later.topics_seen()
    finally:
        later.close()
    assert not [topic for topic in retained if "door" in topic]
    assert {topic for topic in retained if "yard" in topic} == {
        "frameflow/yard/face",
        "homeassistant/sensor/frameflow_yard/face_count/config",
        "homeassistant/binary_sensor/frameflow_yard/face_occupancy/config",
    }
    assert subscriber.latest("homeassistant/sensor/frameflow_door/face_count/config") == b""  # HA removes it


def test_bad_results_are_skipped_with_a_reason_and_nothing_else_is_lost(
    redis_url, redis_client, mosquitto, subscriber, caplog
) -> None:
    with bridge_thread(redis_url, mosquitto.url(), gap_s=0.3) as bridge:
        write_face(redis_client, "door", "good-1", [0.9])
        redis_client.xadd(FACES, {"frame_id": "bad-1", "camera_id": "door", "faces": "{not json"})
        redis_client.xadd(FACES, {"frame_id": "bad-2", "camera_id": "a/b#", "faces": "[]"})
        redis_client.xadd(FACES, {"camera_id": "door", "faces": "[]"})  # no frame id: not a result
        fields = face_fields("door", "bad-3", [0.9])
        fields["faces"] = json.dumps([{"score": 7, "box": [1, 2, 3, 4]}])
        redis_client.xadd(FACES, fields)
        write_face(redis_client, "porch", "good-2", [0.9])
        subscriber.wait_for(lambda: len([e for e in subscriber.events() if e["type"] == "end"]) == 2)
        subscriber.wait_for(lambda: acked_everything(redis_client), what="every entry acknowledged")
        skipped = {
            sample.labels["reason"]: sample.value for sample in _samples(bridge, "frameflow_mqtt_results_skipped")
        }
    frames = {event["after"]["frame_id"] for event in subscriber.events()}
    assert frames == {"good-1", "good-2"}
    assert sum(skipped.values()) == 4, skipped
    warnings = [record.getMessage() for record in caplog.records if record.name == "pipeline.mqtt.bridge"]
    assert len(warnings) == 4 and all("\n" not in line and line.startswith("Skipping result") for line in warnings)
    assert any("is not JSON" in line for line in warnings) and any("is not a camera id" in line for line in warnings)
    assert any("not a number from 0 to 1" in line for line in warnings)


def _samples(bridge, name: str) -> list:
    return [
        sample
        for metric in bridge.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == name + "_total"
    ]
