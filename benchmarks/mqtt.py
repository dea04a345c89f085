"""``python -m benchmarks.mqtt``: the MQTT bridge's throughput, side by side with a bare paho loop.

Both run on loopback against a Mosquitto of their own (a free port, a generated config) and the
same Redis, in alternated runs:

* **paho floor**: one paho client publishes N pairs of messages at QoS 1 (a ~600-byte JSON event
  and a 1-byte count, what the bridge sends per result here) and waits for every PUBACK. Nothing
  can bridge faster than this.
* **bridge**: N ``faces:detected`` results already in Redis (one camera, the face count alternating
  1 and 2, so every result is one ``update`` event and one retained count); a :class:`Bridge`
  reads them through its consumer group, publishes at QoS 1, waits for the PUBACKs and only then
  acknowledges the entries. The clock stops when every entry is delivered and acknowledged (the
  track's latest, kept pending until its end, excepted) and no publish is in flight.

Prints events per second of each, medians with min-max, and the ratio run by run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import redis
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from pipeline.domain.results import result_fields
from pipeline.mqtt.bridge import Bridge
from pipeline.mqtt.client import MAX_INFLIGHT
from pipeline.mqtt.mapping import ResultMapping
from pipeline.mqtt.settings import MqttSettings
from pipeline.streams.embedded import EmbeddedRedis, free_port

STREAM = "faces:detected"


class Broker:
    """A Mosquitto on a free loopback port, stopped at the end."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = free_port()
        config = folder / "mosquitto.conf"
        config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def event_payload(index: int) -> bytes:
    """About the size of the bridge's events."""
    state = {"id": "0123456789abcdef", "camera": "bench", "label": "face", "count": 1 + index % 2, "score": 0.9}
    state |= {"top_score": 0.9, "box": [10.0, 8.0, 30.0, 32.0], "frame_id": f"{index:032x}"}
    state |= {"top_frame_id": "0" * 32, "start_time": 1.0, "last_time": 2.0, "end_time": None, "active": True}
    event = {"type": "update", "id": state["id"], "camera": "bench", "label": "face", "before": state, "after": state}
    return json.dumps(event, separators=(",", ":")).encode()


def paho_floor(port: int, events: int) -> float:
    """Events per second of a bare paho QoS-1 loop (an event and a count each)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-floor", protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(MAX_INFLIGHT)
    done = threading.Semaphore(0)
    client.on_publish = lambda *args: done.release()
    client.connect("127.0.0.1", port)
    client.loop_start()
    payloads = [event_payload(index) for index in range(events)]
    began = time.perf_counter()
    for index, payload in enumerate(payloads):
        client.publish("bench/events", payload, qos=1)
        client.publish("bench/cam/face", str(1 + index % 2), qos=1, retain=True)
    for _ in range(2 * events):
        done.acquire()
    elapsed = time.perf_counter() - began
    client.disconnect()
    client.loop_stop()
    return events / elapsed


def fill_results(client: redis.Redis, events: int) -> None:
    client.delete(STREAM)
    pipe = client.pipeline(transaction=False)
    for index in range(events):
        faces = [{"box": [10.0, 8.0, 30.0, 32.0], "score": 0.9, "landmarks": {}}] * (1 + index % 2)
        result = {"faces_detected": len(faces), "faces": faces, "image_width": 64, "image_height": 48}
        frame = {"frame_id": f"{index:032x}", "camera_id": "bench", "timestamp": "2030-01-01T00:00:00+00:00"}
        pipe.xadd(STREAM, result_fields(result, frame, processor_id="bench", latency_ms=1.0, trace_context="{}"))
        if index % 1000 == 999:
            pipe.execute()
    pipe.execute()


def bridge_rate(redis_url: str, port: int, events: int) -> float:
    """Events per second the bridge sustains from a full result stream to acknowledged publishes."""
    client = redis.Redis.from_url(redis_url)
    fill_results(client, events + 1)  # the first result opens the track (new), the rest are updates
    settings = MqttSettings.from_env({}, url=f"mqtt://127.0.0.1:{port}", gap_s=3600, discovery_prefix="")
    bridge = Bridge(client, settings, ResultMapping.default(), from_beginning=True)
    last = client.xrevrange(STREAM, count=1)[0][0]
    thread = threading.Thread(target=bridge.run, daemon=True)
    began = time.perf_counter()
    thread.start()
    while True:
        [group] = client.xinfo_groups(STREAM)
        if group["last-delivered-id"] == last and group["pending"] <= 1 and bridge.publisher.in_flight() == 0:
            break
        time.sleep(0.005)
    elapsed = time.perf_counter() - began
    bridge.stop()
    thread.join(10)
    client.xgroup_destroy(STREAM, settings.group)
    client.close()
    return events / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="events per run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder, EmbeddedRedis(binary=shutil.which("redis-server")) as server:
        broker = Broker(Path(folder))
        try:
            floors, bridges = [], []
            for run in range(args.runs):
                first, second = (paho_floor, bridge_rate) if run % 2 == 0 else (bridge_rate, paho_floor)
                for case in (first, second):
                    if case is paho_floor:
                        floors.append(paho_floor(broker.port, args.events))
                    else:
                        bridges.append(bridge_rate(server.url, broker.port, args.events))
                print(f"run {run + 1}: paho floor {floors[-1]:,.0f} events/s, bridge {bridges[-1]:,.0f} events/s")
        finally:
            broker.stop()
    ratios = [bridge / floor for bridge, floor in zip(bridges, floors, strict=True)]
    print(f"\n{args.events} events per run, {args.runs} runs (an event = a JSON event + a retained count, QoS 1)")
    for name, values in (("paho floor", floors), ("bridge", bridges)):
        print(f"{name:>10}: {statistics.median(values):,.0f} events/s (min {min(values):,.0f}, max {max(values):,.0f})")
    low, high = min(ratios), max(ratios)
    print(f"{'ratio':>10}: bridge / floor = {statistics.median(ratios):.2f} (min {low:.2f}, max {high:.2f})")


if __name__ == "__main__":
    main()
