"""At least once, proven on real processes: ``frameflow mqtt`` killed with SIGKILL mid-stream and
restarted, and Mosquitto stopped for ten seconds while results keep coming. Every event arrives;
duplicates are allowed (and counted), losses are not."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from pipeline.streams.embedded import free_port
from tests.mosquitto import Mosquitto, Subscriber, wait_port_free
from tests.mqtt_harness import FACES, GROUP, acked_everything, bridge_process, group_exists, write_face
from tests.polling import wait_until

pytestmark = pytest.mark.slow


class Producer(threading.Thread):
    """Writes face results in the background: ``per_camera`` entries (scores rising, so each one is
    an event) for camera after camera, ``rate`` entries a second, until ``cameras`` are done."""

    def __init__(self, client, cameras: int, per_camera: int, rate: float) -> None:
        super().__init__(name="test-producer", daemon=True)
        self.client, self.cameras, self.per_camera, self.interval = client, cameras, per_camera, 1 / rate
        self.written = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            began = time.monotonic()
            for camera in range(self.cameras):
                for index in range(self.per_camera):
                    write_face(self.client, f"cam-{camera}", frame_id(camera, index), [0.5 + 0.1 * index])
                    self.written += 1
                    pause = began + self.written * self.interval - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)  # pacing the producer, not synchronising the test
        except BaseException as error:
            self.failure = error


def frame_id(camera: int, index: int) -> str:
    return f"cam{camera}-f{index}"


def assert_every_event_arrived(subscriber: Subscriber, cameras: int, per_camera: int) -> Counter:
    """Every entry's event and every camera's ``end`` (from its last frame, count 0) arrived;
    returns how many times each (type, frame) arrived."""
    events = subscriber.events()
    seen = Counter((event["type"], event["after"]["frame_id"]) for event in events)
    frames = {frame for _, frame in seen}
    missing = [frame_id(c, i) for c in range(cameras) for i in range(per_camera) if frame_id(c, i) not in frames]
    assert not missing, f"{len(missing)} frame(s) never in an event: {missing[:5]}"
    ended = {event["camera"] for event in events if event["type"] == "end" and event["after"]["count"] == 0}
    assert ended == {f"cam-{c}" for c in range(cameras)}
    for camera in range(cameras):
        last = [event for event in events if event["type"] == "end" and event["camera"] == f"cam-{camera}"][-1]
        assert last["after"]["frame_id"] == frame_id(camera, per_camera - 1)
        assert subscriber.latest(f"frameflow/cam-{camera}/face") == b"0"
    return seen


def all_ended(subscriber: Subscriber, cameras: int) -> bool:
    ends = {event["camera"] for event in subscriber.events() if event["type"] == "end"}
    return len(ends) >= cameras


def test_bridge_killed_mid_stream_and_restarted_loses_no_event(
    redis_url, redis_client, tmp_path: Path, request
) -> None:
    cameras, per_camera = 120, 3
    with Mosquitto(tmp_path / "mosquitto") as broker:
        subscriber = Subscriber(broker)
        log = tmp_path / "bridge.log"
        bridge = bridge_process(redis_url, broker.url(), log, "--gap", "0.5")
        request.addfinalizer(bridge.stop)
        wait_until(lambda: group_exists(redis_client) and subscriber.on("frameflow/available"), 30, bridge.log_tail)
        producer = Producer(redis_client, cameras, per_camera, rate=150)
        producer.start()
        subscriber.wait_for(lambda: len(subscriber.events()) >= 60, 30, "the first events")
        bridge.kill()  # SIGKILL, mid-stream: the producer is still writing
        assert producer.is_alive(), "the stream ended before the kill: nothing was tested"
        assert subscriber.wait_for(lambda: subscriber.latest("frameflow/available") == b"offline", 30, "the Last Will")
        restarted = bridge_process(redis_url, broker.url(), log, "--gap", "0.5")
        request.addfinalizer(restarted.stop)
        producer.join(60)
        assert producer.failure is None and producer.written == cameras * per_camera
        subscriber.wait_for(lambda: all_ended(subscriber, cameras), 60, "every camera's track to end")
        wait_until(lambda: acked_everything(redis_client), 30, "every result acknowledged")
        seen = assert_every_event_arrived(subscriber, cameras, per_camera)
        assert restarted.stop() == 0, restarted.log_tail()
        subscriber.close()
    duplicates = sum(count - 1 for count in seen.values())
    print(f"kill -9 and restart: {sum(seen.values())} events, {duplicates} duplicate(s)")
    assert redis_client.xpending(FACES, GROUP)["pending"] == 0


def test_broker_stopped_for_ten_seconds_the_bridge_reconnects_and_delivers_the_backlog(
    redis_url, redis_client, tmp_path: Path, request
) -> None:
    cameras, per_camera = 40, 2
    with Mosquitto(tmp_path / "mosquitto") as broker:
        subscriber = Subscriber(broker, persistent=True)  # its session (and queue) outlives the broker's restart
        log = tmp_path / "bridge.log"
        port = free_port()
        bridge = bridge_process(redis_url, broker.url(), log, "--gap", "0.5", "--metrics-port", str(port))
        request.addfinalizer(bridge.stop)
        wait_until(lambda: group_exists(redis_client) and subscriber.on("frameflow/available"), 30, bridge.log_tail)
        producer = Producer(redis_client, cameras, per_camera, rate=6)  # about 13 s of results
        producer.start()
        subscriber.wait_for(lambda: len(subscriber.events()) >= 4, 30, "the first events")
        broker.stop()
        wait_port_free(broker.port)
        stopped_at = time.monotonic()
        wait_until(lambda: _metric(port, "frameflow_mqtt_backlog") >= 5, 30, "results to wait in Redis")
        wait_until(lambda: time.monotonic() - stopped_at >= 10, 15, "ten seconds without a broker")
        assert bridge.alive(), bridge.log_tail()
        backlog = _metric(port, "frameflow_mqtt_backlog")
        broker.start()
        producer.join(60)
        assert producer.failure is None
        subscriber.wait_for(lambda: all_ended(subscriber, cameras), 90, "every camera's track to end")
        wait_until(lambda: acked_everything(redis_client), 30, "every result acknowledged")
        seen = assert_every_event_arrived(subscriber, cameras, per_camera)
        assert "Reconnected to the MQTT broker" in bridge.log_tail(200)
        assert _metric(port, "frameflow_mqtt_reconnects_total") >= 1
        assert _metric(port, "frameflow_mqtt_backlog") == 0
        assert bridge.stop() == 0, bridge.log_tail()
        subscriber.close()
    duplicates = sum(count - 1 for count in seen.values())
    print(
        f"broker outage: {backlog:.0f} results waited in Redis, {sum(seen.values())} events, {duplicates} duplicate(s)"
    )


def _metric(port: int, name: str) -> float:
    """The sum of a metric's samples on the bridge's ``/metrics`` (0 when it has none yet)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith((name + " ", name + "{")))
