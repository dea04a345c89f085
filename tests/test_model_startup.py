"""A model processor run the seed's way (``python -m workers.x``): weights missing is one line and
exit 1, not a traceback; a processor that starts says so in its log, with no logging set up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import ProcessorRegistry
from pipeline.streams.connection import RedisClient

from .model_support import ROOT, hand_landmarker_task
from .processor_harness import wait_for


def module_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), "HEALTH_CHECK_INTERVAL": "0.5", **extra}
    for name in ("FRAMEFLOW_LOG_FORMAT", "FRAMEFLOW_NAMESPACE", "FRAMEFLOW_LOG_LEVEL"):
        env.pop(name, None)
    return env


@pytest.mark.parametrize(
    ("module", "needs", "setting", "expected"),
    [
        ("workers.face_detection", "torch", "FRAMEFLOW_FACE_WEIGHTS", "MTCNN weights missing in"),
        ("workers.gesture_detection", "mediapipe", "FRAMEFLOW_GESTURE_WEIGHTS", "hand landmarker missing: no"),
    ],
)
def test_missing_weights_are_one_line_and_exit_1(
    redis_url: str, tmp_path: Path, module: str, needs: str, setting: str, expected: str
) -> None:
    pytest.importorskip(needs)
    env = module_env(redis_url, **{setting: str(tmp_path / "nowhere")})
    done = subprocess.run(
        [sys.executable, "-m", module], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    problems = [
        line for line in done.stderr.splitlines() if " ERROR " in line or "Traceback" in line or expected in line
    ]
    assert len(problems) == 1 and expected in problems[0] and "frameflow models fetch" in problems[0], done.stderr


def test_a_model_processor_logs_its_start_up_without_logging_configured(
    redis_url: str, redis_client: RedisClient, tmp_path: Path
) -> None:
    pytest.importorskip("mediapipe")
    env = module_env(redis_url, FRAMEFLOW_GESTURE_WEIGHTS=str(hand_landmarker_task()))
    log = tmp_path / "gestures.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.gesture_detection"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )  # fmt: skip
    try:
        registry = ProcessorRegistry(redis_client)
        wait_for(
            lambda: registry.get("gesture-detection-1") is not None or process.poll() is not None,
            timeout=60,
            what="the gesture processor to register",
        )
        assert process.poll() is None, log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    assert code == 0, log.read_text()
    assert "hand_landmarker loaded on cpu." in log.read_text()
