"""The MQTT bridge's test helpers: result entries as processors write them, the bridge in a thread
or as a real ``frameflow mqtt`` process, and a face processor that needs no model."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from PIL import Image

from pipeline import ProcessorClient
from pipeline.domain.results import result_fields
from pipeline.mqtt.bridge import Bridge
from pipeline.mqtt.mapping import ResultMapping
from pipeline.mqtt.settings import MqttSettings
from tests.polling import wait_until
from tests.processes import ROOT, WorkerProcess

FACES = "faces:detected"
OBJECTS = "objects:detected"
GROUP = "mqtt-bridge"


def face_fields(camera: str, frame_id: str, scores: list[float], *, at: datetime | None = None) -> dict[str, str]:
    """A ``faces:detected`` entry as :class:`workers.face_detection.FaceDetectionProcessor` writes it."""
    faces = [
        {"box": [10.0 + 5 * index, 8.0, 30.0 + 5 * index, 32.0], "score": score, "landmarks": {}}
        for index, score in enumerate(scores)
    ]
    result = {"faces_detected": len(faces), "faces": faces, "image_width": 64, "image_height": 48, "model": "mtcnn"}
    frame = {"frame_id": frame_id, "camera_id": camera, "timestamp": (at or datetime.now(UTC)).isoformat()}
    return result_fields(result, frame, processor_id="face-test-1", latency_ms=1.0, trace_context="{}")


def write_face(client: redis.Redis, camera: str, frame_id: str, scores: list[float], **options: Any) -> str:
    return client.xadd(FACES, face_fields(camera, frame_id, scores, **options)).decode()


def group_exists(client: redis.Redis, stream: str = FACES) -> bool:
    try:
        return any(group["name"] == GROUP.encode() for group in client.xinfo_groups(stream))
    except redis.ResponseError:
        return False


def acked_everything(client: redis.Redis, stream: str = FACES) -> bool:
    """Every entry of ``stream`` delivered to the bridge's group and acknowledged."""
    [group] = [group for group in client.xinfo_groups(stream) if group["name"] == GROUP.encode()]
    last = client.xrevrange(stream, count=1)
    return group["pending"] == 0 and (not last or group["last-delivered-id"] == last[0][0])


@contextlib.contextmanager
def bridge_thread(redis_url: str, mqtt_url: str, **settings: Any) -> Iterator[Bridge]:
    """A :class:`Bridge` running in a thread of the test, from the start of each stream."""
    settings.setdefault("gap_s", 0.5)
    client = redis.Redis.from_url(redis_url)
    bridge = Bridge(
        client, MqttSettings.from_env({}, url=mqtt_url, **settings), ResultMapping.default(), from_beginning=True
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            bridge.run()
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=run, name="test-bridge", daemon=True)
    thread.start()
    try:
        wait_until(lambda: failure or bridge.publisher.connected, 15, "the bridge to connect")
        if failure:
            raise failure[0]
        yield bridge
    finally:
        bridge.stop()
        thread.join(15)
        client.close()
    assert not thread.is_alive(), "the bridge did not stop"
    if failure:
        raise failure[0]


def bridge_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("REDIS_", "FRAMEFLOW_", "MQTT_"))}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), PYTHONUNBUFFERED="1"
    )
    env.update(extra)
    return env


def bridge_process(
    redis_url: str, mqtt_url: str, log_path: Path, *args: str, debug: bool = False, **env: str
) -> WorkerProcess:
    """``frameflow [--debug] --redis-url URL mqtt --mqtt-url URL --from-beginning ARGS`` as a real process."""
    command = [
        sys.executable,
        "-m",
        "pipeline.tools.cli",
        *(["--debug"] if debug else []),
        "--redis-url",
        redis_url,
    ]
    command += ["mqtt", "--mqtt-url", mqtt_url]
    return WorkerProcess([*command, "--from-beginning", *args], bridge_env(**env), log_path)


def jpeg(width: int, height: int) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 160)).save(output, format="JPEG")
    return output.getvalue()


class FakeFaces(ProcessorClient):
    """A face processor without a model: each frame's ``metadata`` says which faces it holds
    (``{"faces": [[score, [x1, y1, x2, y2]], ...]}``); results are shaped as the real one's."""

    max_retries = 0

    async def process_frame(self, frame_data: dict[bytes, bytes]) -> dict | None:
        wanted = json.loads(frame_data.get(b"metadata", b"{}") or b"{}").get("faces", [])
        faces = [{"box": box, "score": score, "landmarks": {}} for score, box in wanted]
        return {
            "faces_detected": len(faces),
            "faces": faces,
            "image_width": int(frame_data[b"width"]),
            "image_height": int(frame_data[b"height"]),
            "model": "fake",
        }
