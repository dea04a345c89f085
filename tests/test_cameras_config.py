"""The cameras file: a good one is read with its defaults, a bad one is refused in one line that
names the file, the camera and the field (and never a camera's password)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cameras.config import load_cameras
from pipeline.cameras.errors import CameraConfigError
from tests.cli_harness import frameflow_process


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cameras.yml"
    path.write_text(text)
    return str(path)


def test_cameras_take_the_defaults_and_keep_their_own_fields(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "defaults: {fps: 2, capabilities: [faces], max_age: 1.5}\n"
        "cameras:\n"
        "  - {id: door, url: 'rtsp://u:p@10.0.0.2/s', fps: 10, transport: udp, width: 640}\n"
        "  - {id: yard, url: 'http://10.0.0.3/mjpeg', enabled: false, capabilities: [objects]}\n"
        "  - {id: demo, url: synthetic}\n",
    )
    door, yard, demo = load_cameras(path)
    assert (door.fps, door.capabilities, door.max_age, door.transport, door.width) == (10, ("faces",), 1.5, "udp", 640)
    assert (door.kind, door.masked_url) == ("rtsp", "rtsp://u:***@10.0.0.2/s")
    assert (yard.kind, yard.enabled, yard.capabilities, yard.fps) == ("http", False, ("objects",), 2)
    assert (demo.kind, demo.stall_timeout, demo.keyframes_only) == ("synthetic", 10, False)


@pytest.mark.parametrize(
    ("camera", "message"),
    [
        ("{id: door, url: synthetic, capabilities: [x], fps: -1}", "camera door: field 'fps': -1 is not above 0"),
        ("{id: door, capabilities: [x]}", "camera door: field 'url': missing"),
        ("{id: door, url: synthetic, capabilities: [x], colour: red}", "camera door: unknown field(s) colour"),
        ("{id: 'bad id', url: synthetic, capabilities: [x]}", "camera bad id: field 'id': 'bad id' is not 1-128"),
        ("{id: door, url: 'ftp://a:pw@h/x', capabilities: [x]}", "camera door: field 'url': ftp://a:***@h/x is not"),
        ("{id: door, url: synthetic, capabilities: [x], transport: quic}", "field 'transport': 'quic' is not tcp"),
        ("{id: door, url: synthetic, capabilities: [x], width: 5}", "camera door: field 'width': 5 is not from 16"),
        ("{id: door, url: synthetic, capabilities: [x], enabled: 'no'}", "field 'enabled': 'no' is not true or false"),
        ("{id: door, url: synthetic, capabilities: []}", "camera door: field 'capabilities': missing"),
    ],
)
def test_a_bad_camera_is_one_line_naming_the_camera_and_the_field(tmp_path: Path, camera: str, message: str) -> None:
    path = write(tmp_path, f"cameras:\n  - {camera}\n")
    with pytest.raises(CameraConfigError) as raised:
        load_cameras(path)
    assert str(raised.value).startswith(f"cameras file {path}: ")
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert "pw@" not in str(raised.value)


def test_a_camera_declared_twice_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "cameras:\n  - {id: a, url: synthetic, capabilities: [x]}\n  - {id: a, url: synthetic, capabilities: [x]}\n",
    )
    with pytest.raises(CameraConfigError, match="camera a: field 'id': declared twice"):
        load_cameras(path)


def test_cameras_check_on_a_bad_file_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, "cameras:\n  - {id: door, url: synthetic, capabilities: [x], fps: fast}\n")
    done = frameflow_process("cameras", "check", path)
    assert done.returncode == 1
    assert done.stderr.strip() == f"Error: cameras file {path}: camera door: field 'fps': 'fast' is not a number"
    assert "Traceback" not in done.stdout + done.stderr
