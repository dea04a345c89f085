"""``frameflow cameras run|check`` as real processes; ``frameflow cameras`` and ``top``, the operator's view."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import redis

from pipeline.streams.embedded import free_port
from tests.cameras import HttpCamera
from tests.cli_harness import FRAMEFLOW, frameflow, frameflow_process, table_row
from tests.polling import wait_until
from tests.processes import ROOT, WorkerProcess
from tests.processor_harness import queue_entries, register_fake


def cameras_file(tmp_path: Path, cameras: str) -> str:
    path = tmp_path / "cameras.yml"
    path.write_text(f"defaults: {{capabilities: [look]}}\ncameras:\n{cameras}")
    return str(path)


def test_cameras_run_publishes_every_camera_reports_its_state_and_metrics_and_stops_on_sigterm(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    register_fake(redis_client, "viewer-1", ("look",))
    path = cameras_file(
        tmp_path,
        "  - {id: cam-a, url: synthetic, fps: 10}\n"
        "  - {id: cam-b, url: synthetic, fps: 10, width: 160, height: 120}\n"
        "  - {id: cam-off, url: synthetic, enabled: false}\n",
    )
    port = free_port()
    command = [*FRAMEFLOW, "--redis-url", redis_url, "cameras", "run", path, "--metrics-port", str(port)]
    command += ["--state-interval", "0.5"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = WorkerProcess(command, env, tmp_path / "cameras.log")
    try:
        wait_until(
            lambda: {entry[b"camera_id"] for entry in queue_entries(redis_client, "viewer-1")} == {b"cam-a", b"cam-b"},
            20,
            lambda: f"frames of both cameras: {process.log_tail()}",
        )
        wait_until(
            lambda: redis_client.hget("frameflow:camera:cam-b", "connected") == b"true", 10, "cam-b's state in Redis"
        )
        view = frameflow(redis_url, "cameras")
        top = frameflow(redis_url, "top", "--once")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        exit_code = process.stop()
    assert exit_code == 0, process.log_tail()
    assert "cameras stopped" in process.log_tail()
    small = [entry for entry in queue_entries(redis_client, "viewer-1") if entry[b"camera_id"] == b"cam-b"]
    assert {(entry[b"width"], entry[b"height"]) for entry in small} == {(b"160", b"120")}
    row = table_row(view.output, "cam-a")
    assert "connected" in row[1] and row[-1] == "synthetic", view.output
    assert "cam-off" not in view.output
    assert "connected" in table_row(top.output, "cam-b")[1], top.output
    assert 'frameflow_camera_frames_published_total{camera="cam-a"}' in metrics
    assert 'frameflow_camera_connected{camera="cam-b"} 1.0' in metrics
    assert redis_client.pttl("frameflow:camera:cam-a") <= 1500  # three state intervals


def test_cameras_view_shows_a_camera_whose_state_expired_as_gone(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.sadd("frameflow:cameras", "old-cam")
    result = frameflow(redis_url, "cameras")
    assert table_row(result.output, "old-cam")[1] == "gone", result.output


def test_cameras_check_prints_each_camera_and_exits_1_when_one_cannot_be_read(tmp_path: Path) -> None:
    with HttpCamera(fps=20) as camera:
        path = cameras_file(
            tmp_path,
            f"  - {{id: mjpeg, url: '{camera.url('/mjpeg')}'}}\n"
            f"  - {{id: snapshot, url: '{camera.url('/snapshot')}', fps: 10}}\n"
            "  - {id: nobody, url: 'http://admin:pa55@127.0.0.1:1/x', stall_timeout: 2}\n",
        )
        done = frameflow_process("cameras", "check", path, "--seconds", "0.5")
    assert done.returncode == 1, done.stderr
    mjpeg, snapshot, nobody = (table_row(done.stdout, name) for name in ("mjpeg", "snapshot", "nobody"))
    assert mjpeg[1:4] == ["yes", "mjpeg", "320x240"] and float(mjpeg[4]) > 5
    assert snapshot[1:4] == ["yes", "mjpeg", "320x240"]
    assert nobody[1] == "no" and "Connection refused" in nobody[5] and "pa55" not in done.stdout
    assert done.stderr.strip() == "Error: 1 camera(s) cannot be read: nobody"
