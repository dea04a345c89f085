"""The frameflow command line, run as a real process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import redis

from pipeline.streams.embedded import EmbeddedRedis

FRAMEFLOW = [sys.executable, "-m", "pipeline.tools.cli"]


def test_demo_moves_frames_through_a_worker_process(redis_url: str, redis_client: redis.Redis) -> None:
    result = subprocess.run(
        [*FRAMEFLOW, "demo", "--frames", "40", "--timeout", "60"],
        env={**os.environ, "REDIS_URL": redis_url, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    row = re.search(r"│\s+(\d+)\s+│\s+(\d+)\s+│\s+(\d+)\s+│", result.stdout)
    assert row is not None, result.stdout
    assert row.groups() == ("40", "40", "40")
    assert redis_client.xlen("samples:processed") == 40
    assert redis_client.xlen("frames:ready:sample-1") == 0
    assert redis_client.exists("frameflow:processor:sample-1") == 0  # deregistered on shutdown


def test_redis_command_serves_until_sigterm_and_leaves_nothing(tmp_path) -> None:
    process = subprocess.Popen(
        [*FRAMEFLOW, "redis", "--port", "0", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = re.search(r"redis://127\.0\.0\.1:\d+/0", line)
        assert url is not None, line
        client = redis.Redis.from_url(url.group(0))
        assert client.ping()
        client.set("kept", "yes")
        client.close()  # else the server lingers until this client leaves (see the next test)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
            except redis.exceptions.ConnectionError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("redis-server still answers after frameflow redis exited")
        assert (tmp_path / "appendonlydir").exists() or (tmp_path / "appendonly.aof").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_redis_command_keeps_serving_its_clients_after_sigterm_until_they_leave(tmp_path) -> None:
    # Under honcho every process gets SIGTERM at once: the server must outlive its clients' shutdown.
    process = subprocess.Popen(
        [*FRAMEFLOW, "redis", "--port", "0", "--dir", str(tmp_path), "--linger", "60"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert process.stdout is not None
        url = re.search(r"redis://127\.0\.0\.1:\d+/0", process.stdout.readline())
        assert url is not None
        client = redis.Redis.from_url(url.group(0))
        assert client.ping()
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while len(client.client_list()) < 2:  # frameflow redis connects to watch its clients leave
            assert time.monotonic() < deadline, "frameflow redis did not start lingering"
            time.sleep(0.02)
        assert client.set("still", "served")
        assert process.poll() is None
        client.close()
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_redis_command_refuses_a_port_another_redis_serves(tmp_path) -> None:
    # Another Redis on a free port (never the machine's 6379), holding data that must survive.
    with EmbeddedRedis() as other:
        client = redis.Redis.from_url(other.url)
        client.set("theirs", "kept")
        result = subprocess.run(
            [*FRAMEFLOW, "redis", "--port", str(other.port), "--dir", str(tmp_path)],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            timeout=60,
        )
        assert "ready" not in result.stdout, result.stdout
        assert "Traceback" not in result.stderr, result.stderr
        assert (result.returncode, result.stderr.splitlines()) == (
            1,
            [
                f"Error: port {other.port} on 127.0.0.1 is taken (Address already in use): "
                "choose another port, or 0 for any free one"
            ],
        )
        assert client.get("theirs") == b"kept"  # the other Redis was not disturbed
        client.close()
