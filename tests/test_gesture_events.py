"""End to end: a camera's stream through the gesture processor (a real process) becomes one
``gesture_started`` once a gesture is held for N frames and one ``gesture_ended`` once it is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from pipeline import FrameProducer, ProcessorRegistry
from pipeline.domain.results import wait_for_results

from .model_support import ROOT, encoded, hand_landmarker_task
from .processor_harness import wait_for

pytest.importorskip("mediapipe", reason="the gesture processor needs mediapipe: pip install -e '.[gestures]'")
skimage_data = pytest.importorskip("skimage.data", reason="test pictures come from scikit-image (the dev extra)")

ROCK = ROOT / "tests" / "data" / "gestures" / "rock" / "09a619ab-cdf7-4a66-911f-347113f050f1.jpg"
HOLD_FRAMES = 3


def test_a_held_gesture_starts_after_n_frames_and_ends_when_it_is_gone(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
        "HEALTH_CHECK_INTERVAL": "0.5",
        "FRAMEFLOW_GESTURE_WEIGHTS": str(hand_landmarker_task()),
        "FRAMEFLOW_GESTURE_HOLD_FRAMES": str(HOLD_FRAMES),
    }
    env.pop("FRAMEFLOW_NAMESPACE", None)
    log = tmp_path / "gestures.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.gesture_detection"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )  # fmt: skip
    rock = np.asarray(Image.open(ROCK).convert("RGB"))
    nobody = skimage_data.astronaut()
    stream = [("rock", rock)] * (HOLD_FRAMES + 2) + [("nobody", nobody)] * (HOLD_FRAMES + 1)
    producer = FrameProducer(redis_url)
    try:
        registry = ProcessorRegistry(redis_client)
        wait_for(
            lambda: registry.get("gesture-detection-1") is not None or process.poll() is not None,
            timeout=60,
            what="the gesture processor to register",
        )
        assert process.poll() is None, log.read_text()[-2000:]
        shown = {}
        for what, picture in stream:
            height, width = picture.shape[:2]
            decision = producer.publish(
                camera_id="porch",
                capabilities=["gesture_detection"],
                image=encoded(picture, "JPEG"),
                width=width,
                height=height,
            )
            assert decision.targets == ("gesture-detection-1",)
            shown[decision.frame_id] = what
        results = wait_for_results(redis_client, "gestures:detected", len(stream), timeout_s=60)
    finally:
        producer.close()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0, log.read_text()[-2000:]
    assert len(results) == len(stream)
    events = [
        (event["event"], event["gesture"], shown[result["frame_id"]])
        for result in results
        for event in json.loads(result["events"])
    ]
    assert events == [("gesture_started", "rock", "rock"), ("gesture_ended", "rock", "nobody")], events
    assert {result["camera_id"] for result in results} == {"porch"}
