"""``mqtts://`` with a CA made by trustme and a password: it works, the password is never printed,
and a wrong password is one clear line and exit code 1."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mosquitto import Mosquitto, Subscriber
from tests.mqtt_harness import bridge_env, bridge_process, group_exists, write_face
from tests.polling import wait_until
from tests.processes import ROOT
from tests.tls import Certificates

pytestmark = pytest.mark.slow

USER = "bridge"


@pytest.fixture
def secure_broker(tmp_path: Path):
    password = secrets.token_urlsafe(18)
    certificates = Certificates.make(tmp_path)
    with Mosquitto(tmp_path / "mosquitto", certificates=certificates, users={USER: password}) as broker:
        yield broker, password


def test_mqtts_with_a_ca_and_a_password_works_and_never_shows_the_password(
    redis_url, redis_client, secure_broker, tmp_path: Path, request
) -> None:
    broker, password = secure_broker
    subscriber = Subscriber(broker, user=USER, password=password)
    request.addfinalizer(subscriber.close)
    url = broker.url(USER, password)
    assert url.startswith("mqtts://") and "?ca=" in url
    log = tmp_path / "bridge.log"
    bridge = bridge_process(redis_url, url, log, "--gap", "0.3", debug=True)  # every log line there is
    request.addfinalizer(bridge.stop)
    wait_until(lambda: group_exists(redis_client), 30, bridge.log_tail)
    write_face(redis_client, "porch", "tls-1", [0.95])
    subscriber.wait_for(lambda: [e for e in subscriber.events() if e["type"] == "end"], 30, "the track over TLS")
    assert subscriber.on("frameflow/porch/face") == [b"1", b"0"]
    assert bridge.stop() == 0
    output = log.read_text()
    assert password not in output
    assert "Sending CONNECT" in output  # paho's own debug lines were there too
    assert f"mqtts://{USER}:***@127.0.0.1:{broker.port}" in output  # the URL is shown, masked


def test_a_wrong_password_is_one_clear_error_line(redis_url, redis_client, secure_broker) -> None:
    broker, password = secure_broker
    wrong = "not-" + password
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.tools.cli",
            "--redis-url",
            redis_url,
            "mqtt",
            "--mqtt-url",
            broker.url(USER, wrong),
        ],
        cwd=ROOT,
        env=bridge_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 1
    assert wrong not in completed.stdout + completed.stderr and password not in completed.stdout + completed.stderr
    print(completed.stderr)
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(f"Error: MQTT broker at mqtts://{USER}:***@127.0.0.1:{broker.port}")
    assert "refused the connection" in lines[0] and ("password" in lines[0] or "authorized" in lines[0])
