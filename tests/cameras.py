"""Real cameras for the camera tests: GStreamer's RTSP server as a child process, and an HTTP camera
(MJPEG stream and snapshot URL) on a loopback port in the test process.

The RTSP server runs under the system ``python3`` (:mod:`tests.rtsp_server`); when GStreamer is
missing the tests fail with the command that installs it (``scripts/ensure-gstreamer``), never skip.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.streams.embedded import free_port
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
GSTREAMER_CHECK = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "assert Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('rtph264pay')"
)


def require_gstreamer() -> None:
    """Fail (not skip: CI installs it) with the fix when the RTSP test server cannot run here."""
    try:
        found = subprocess.run([SYSTEM_PYTHON, "-c", GSTREAMER_CHECK], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.fail(
            f"the RTSP test server needs {SYSTEM_PYTHON} with GStreamer ({error}): run scripts/ensure-gstreamer"
        )
    if found.returncode != 0:
        pytest.fail(
            "the RTSP test server needs GStreamer's RTSP server, x264enc and PyGObject under "
            f"{SYSTEM_PYTHON}: run scripts/ensure-gstreamer (as root)\n{found.stderr.decode(errors='replace')[-500:]}"
        )


class RtspServer:
    """``tests/rtsp_server.py`` on a free port of 127.0.0.1; :meth:`kill` and :meth:`start` again
    keep the port, :meth:`freeze` stalls it (SIGSTOP: connections open, no packets)."""

    def __init__(self, log_path: Path, *, credentials: str | None = None, **options: Any) -> None:
        self.port = free_port()
        self.log_path, self.credentials, self.options = log_path, credentials, options
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        userinfo = f"{self.credentials}@" if self.credentials else ""
        return f"rtsp://{userinfo}127.0.0.1:{self.port}/cam"

    def start(self) -> RtspServer:
        command = [SYSTEM_PYTHON, str(ROOT / "tests" / "rtsp_server.py"), "--port", str(self.port)]
        for name, value in self.options.items():
            flag = f"--{name.replace('_', '-')}"
            command += [flag] if value is True else [flag, str(value)]
        if self.credentials:
            command += ["--credentials", self.credentials]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._listening, 20, lambda: f"the RTSP server on port {self.port}: {self.log_tail()}")
        return self

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the RTSP server exited: {self.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True
        return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
        self.kill()


@contextlib.contextmanager
def rtsp_server(tmp_path: Path, **options: Any) -> Iterator[RtspServer]:
    require_gstreamer()
    server = RtspServer(tmp_path / "rtsp-server.log", **options)
    try:
        yield server.start()
    finally:
        server.stop()


def jpeg(width: int = 320, height: int = 240, shade: int = 0) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade % 256, 90, 160)).save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


class HttpCamera:
    """``/mjpeg``: an endless ``multipart/x-mixed-replace`` stream of JPEGs (``fps`` a second, parts
    with or without ``Content-Length``, nothing while :attr:`paused` is set); ``/snapshot``: one
    JPEG, or HTTP 500 while :attr:`failures` is above zero (each request uses one);
    ``/redirect?to=URL``: a 302 to URL. Counts requests per path (the query left out)."""

    def __init__(self, fps: float = 20, *, content_length: bool = True) -> None:
        self.fps, self.content_length = fps, content_length
        self.failures = 0
        self.requests: dict[str, int] = {}
        self.stopping = threading.Event()
        self.paused = threading.Event()  #: set: the stream stays open and sends nothing
        self.lock = threading.Lock()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with camera.lock:
                    path, _, query = self.path.partition("?")
                    camera.requests[path] = camera.requests.get(path, 0) + 1
                    failing = path == "/snapshot" and camera.failures > 0
                    if failing:
                        camera.failures -= 1
                if failing:
                    self.send_error(500, "camera busy")
                elif path == "/snapshot":
                    self._answer("image/jpeg", jpeg(shade=camera.requests["/snapshot"] * 37))
                elif path == "/mjpeg":
                    self._stream()
                elif path == "/redirect" and query.startswith("to="):
                    self.send_response(302)
                    self.send_header("Location", query.removeprefix("to="))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send_error(404)

            def _answer(self, content_type: str, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                index = 0
                with contextlib.suppress(OSError):
                    while not camera.stopping.wait(1 / camera.fps):
                        if camera.paused.is_set():
                            continue
                        body = jpeg(shade=index * 37)
                        length = f"Content-Length: {len(body)}\r\n" if camera.content_length else ""
                        self.wfile.write(f"--frame\r\nContent-Type: image/jpeg\r\n{length}\r\n".encode())
                        self.wfile.write(body + b"\r\n")
                        index += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> HttpCamera:
        threading.Thread(target=self.server.serve_forever, name="http-camera", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
