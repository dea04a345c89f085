"""The model processors as real processes, both ways a processor runs:
``dramatiq pipeline.broker workers.face_detection`` and ``python -m workers.object_detection``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from pipeline import FrameProducer, ProcessorRegistry
from pipeline.domain.results import wait_for_results

from .model_support import encoded, mtcnn_weights
from .processor_harness import wait_for

torch = pytest.importorskip("torch", reason="the model processors need torch: pip install -e '.[ml]'")
skimage_data = pytest.importorskip("skimage.data", reason="test pictures come from scikit-image (the dev extra)")

from workers.object_detection import build_detector  # noqa: E402  (imports torch)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_face_and_object_processors_run_as_dramatiq_workers_and_as_modules(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    checkpoint = tmp_path / "ssdlite.pt"
    torch.save(build_detector("ssdlite320_mobilenet_v3_large", random_weights=True).state_dict(), checkpoint)
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
        "FRAMEFLOW_FACE_WEIGHTS": str(mtcnn_weights()),
        "FRAMEFLOW_OBJECT_WEIGHTS": str(checkpoint),
        "FRAMEFLOW_OBJECT_SCORE_THRESHOLD": "0",
        "HEALTH_CHECK_INTERVAL": "0.5",
    }
    env.pop("FRAMEFLOW_NAMESPACE", None)
    commands = {
        "face-detection-1": [sys.executable, "-m", "dramatiq", "pipeline.broker", "workers.face_detection", "-p", "1"],
        "object-detection-1": [sys.executable, "-m", "workers.object_detection"],
    }
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    processes = {
        name: subprocess.Popen(command, cwd=ROOT, env=env, stdout=logs[name].open("wb"), stderr=subprocess.STDOUT)
        for name, command in commands.items()
    }
    registry = ProcessorRegistry(redis_client)
    producer = FrameProducer(redis_url)
    try:
        wait_for(
            lambda: (
                all(registry.get(name) for name in processes) or any(p.poll() is not None for p in processes.values())
            ),
            timeout=90,
            what="both processors to register",
        )
        for name, process in processes.items():
            assert process.poll() is None, f"{name} exited early: {logs[name].read_text()[-2000:]}"
        decision = producer.publish(
            camera_id="door",
            capabilities=["face_detection", "object_detection"],
            image=encoded(skimage_data.astronaut(), "JPEG"),
            width=512,
            height=512,
        )
        assert set(decision.targets) == set(processes)
        (faces,) = wait_for_results(redis_client, "faces:detected", 1, timeout_s=30)
        (objects,) = wait_for_results(redis_client, "objects:detected", 1, timeout_s=30)
    finally:
        producer.close()
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        codes = {name: process.wait(timeout=60) for name, process in processes.items()}
    assert codes == {name: 0 for name in processes}, {name: logs[name].read_text()[-2000:] for name in processes}
    assert faces["frame_id"] == objects["frame_id"] == decision.frame_id
    assert faces["processor_id"] == "face-detection-1" and int(faces["faces_detected"]) == 1
    assert objects["processor_id"] == "object-detection-1" and len(json.loads(objects["objects"])) > 0
    assert registry.get("face-detection-1") is None and registry.get("object-detection-1") is None
