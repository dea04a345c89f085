"""``python -m benchmarks.cameras``: CPU per RTSP camera, side by side with FFmpeg decoding the same stream.

A GStreamer RTSP server (``tests/rtsp_server.py`` under the system ``python3``, see
``scripts/ensure-gstreamer``) streams a 1280x720 H.264 test pattern on loopback: SMPTE bars moving
4 pixels a frame, so every pixel changes, at ``--source-fps`` with a key frame every second and
x264's default 2 Mbit/s. Each case runs as a child process on that stream; after ``--warmup``
seconds (connecting, probing the stream) its CPU time (user + system, every thread, from
``/proc/<pid>/stat``) is measured for ``--seconds``, and the frames it published in that window
are counted in Redis by their entry ids:

* **ffmpeg floor**: ``ffmpeg -rtsp_transport tcp -i rtsp://... -f null -``: receive and decode every
  frame, nothing else. No camera reader that decodes the stream can use less.
* **frameflow, every frame decoded**: ``frameflow cameras run``'s code (:class:`CameraRunner`) with one
  camera at ``fps: 5``: receive, decode every frame, keep the newest, JPEG-encode and publish 5 a
  second to an embedded Redis (a processor registered, its queue bounded).
* **frameflow, key frames only**: the same with ``keyframes_only: true`` (1 key frame a second here,
  so 1 fps published): only the key frames are decoded.

Prints CPU seconds per second of stream for each (a core's share), the frames published, and how
many such cameras one core sustains (1 / share).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from pipeline.streams.keys import queue_keys

ROOT = Path(__file__).resolve().parent.parent

#: The stream of the processor the camera's frames go to.
QUEUE_STREAM = queue_keys("frameflow", "frames.ready.bench-1").stream


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, every thread (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(command: list[str], warmup_s: float, seconds: float) -> tuple[float, float, float, str]:
    """Start ``command``, let it connect and settle for ``warmup_s``, then measure its CPU time for
    ``seconds``; stop it with SIGINT (Ctrl-C). Returns the CPU seconds, the window's wall-clock
    start and end, and its stdout."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(warmup_s)  # the connection and the decoder's start are not what is measured
        started, cpu_before = time.time(), cpu_seconds(process.pid)
        time.sleep(seconds)  # the measured window
        ended, cpu_after = time.time(), cpu_seconds(process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    return cpu_after - cpu_before, started, ended, output


def child(url: str, redis_url: str, fps: float, keyframes_only: bool) -> None:
    """One camera through the camera runner until SIGINT; prints its counters as JSON."""
    from pipeline.cameras.config import camera_from_dict
    from pipeline.cameras.runner import CameraRunner
    from pipeline.domain.registry import ProcessorInfo, ProcessorRegistry
    from pipeline.processes.producer import FrameProducer
    from pipeline.streams.connection import connect

    info = ProcessorInfo(
        processor_id="bench-1",
        capabilities=("look",),
        capacity=1,
        queue_name="frames.ready.bench-1",
        actor_name="process_frame.bench-1",
        queue_bound=0,
    )
    ProcessorRegistry(connect(redis_url)).register(info, ttl_s=600)
    camera = camera_from_dict(
        {"id": "bench", "url": url, "fps": fps, "capabilities": ["look"], "keyframes_only": keyframes_only}
    )
    producer = FrameProducer(redis_url)
    runner = CameraRunner([camera], producer)
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    try:
        runner.run()
    finally:
        producer.close()
    frames_in, frames_out, reconnects, skipped = runner.statuses[0].totals()
    print(json.dumps({"in": frames_in, "out": frames_out, "reconnects": reconnects, "skipped": skipped}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="each case runs this long")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds each case runs before it is measured")
    parser.add_argument("--source-fps", type=int, default=15, help="the camera's frame rate")
    parser.add_argument(
        "--child", nargs=4, metavar=("URL", "REDIS_URL", "FPS", "KEYFRAMES_ONLY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        url, redis_url, fps, keyframes_only = args.child
        child(url, redis_url, float(fps), keyframes_only == "1")
        return

    from pipeline.streams.embedded import EmbeddedRedis, free_port

    port = free_port()
    server_command = [
        "/usr/bin/python3",
        str(ROOT / "tests" / "rtsp_server.py"),
        "--port",
        str(port),
        "--width",
        "1280",
        "--height",
        "720",
        "--fps",
        str(args.source_fps),
        "--gop",
        str(args.source_fps),
        "--pattern",
        "smpte",
        "--motion",
        "4",
    ]
    url = f"rtsp://127.0.0.1:{port}/cam"
    me = [sys.executable, "-m", "benchmarks.cameras"]
    with tempfile.TemporaryDirectory() as folder, EmbeddedRedis() as redis_server:
        log = open(Path(folder) / "rtsp.log", "wb")  # noqa: SIM115 (closed with the server below)
        server = subprocess.Popen(server_command, stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(1.0)  # the server's start, before the first case (not a measurement)
            client = redis.Redis.from_url(redis_server.url)
            cases: dict[str, list[float]] = {
                "ffmpeg floor": [],
                "frameflow, every frame": [],
                "frameflow, key frames": [],
            }
            published: dict[str, list[float]] = {name: [] for name in cases}
            for run in range(args.runs):
                for name in cases:
                    client.flushall()
                    if name == "ffmpeg floor":
                        command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", url]
                        command += ["-f", "null", "-"]
                    else:
                        keyframes = "1" if name.endswith("key frames") else "0"
                        command = [*me, "--child", url, redis_server.url, "5", keyframes]
                    cpu, started, ended, output = measure(command, args.warmup, args.seconds)
                    window = client.xrange(QUEUE_STREAM, f"{int(started * 1000)}-0", f"{int(ended * 1000)}-0")
                    cases[name].append(cpu / (ended - started))
                    published[name].append(len(window) / (ended - started))
                    print(f"run {run + 1}: {name}: {cases[name][-1]:.3f} CPU s/s {output.strip()}", file=sys.stderr)
        finally:
            server.kill()
            server.wait()
            log.close()
    print(f"\n1280x720 H.264 at {args.source_fps} fps over RTSP/TCP, {args.seconds:g} s per case, {args.runs} runs")
    print(f"{'case':<26} {'CPU share, median (min-max)':>28} {'published/s':>12} {'cameras per core':>17}")
    for name, shares in cases.items():
        share = statistics.median(shares)
        rate = statistics.median(published[name])
        print(f"{name:<26} {share:>12.3f} ({min(shares):.3f}-{max(shares):.3f})  {rate:>12.1f} {1 / share:>17.1f}")


if __name__ == "__main__":
    main()
