"""The CLI's commands that change something, against a real Redis with real processors:
dead letters, deregister, drain, enqueue (synthetic camera, image folder, video file), and their errors."""

from __future__ import annotations

import io
import itertools
import json
import threading
import time
from datetime import datetime
from pathlib import Path

import av
import dramatiq
import pytest
from PIL import Image, ImageStat

from pipeline import FrameProducer, ProcessorRegistry
from pipeline.streams.embedded import free_port
from tests.cli_harness import frameflow, frameflow_process, table_row
from tests.processor_harness import IMAGE, RecordingProcessor, queue_entries, register_fake, running, wait_for


# -- dead letters ----------------------------------------------------------------------------
@pytest.fixture
def failing_jobs(broker, worker):
    """Two dead letters on ``cli.jobs``; the actor succeeds for values put in ``healed``."""
    healed: set[str] = set()
    done: list[str] = []

    @dramatiq.actor(queue_name="cli.jobs", max_retries=0)
    def explode(value: str) -> None:
        if value not in healed:
            raise ValueError(f"boom {value[:10]}")
        done.append(value)

    messages = []
    for value in ("first", "x" * 500):  # one after the other: "first" is the oldest dead letter
        messages.append(explode.send(value))
        broker.join("cli.jobs", fail_fast=False)
    return broker.dead_letter_queue("cli.jobs"), messages, healed, done


def test_dlq_list_shows_dead_letters_with_their_reasons(redis_url, failing_jobs) -> None:
    _, messages, _, _ = failing_jobs
    table = frameflow(redis_url, "dlq", "list", "cli.jobs")
    by_stream = frameflow(redis_url, "dlq", "list", "cli:jobs", "--json")

    assert table.exit_code == 0, table.output
    assert "dead letters of cli.jobs (2)" in table.stdout
    reasons = {table_row(table.stdout, letter["entry_id"])[4] for letter in json.loads(by_stream.stdout)}
    assert reasons == {"ValueError: boom first", "ValueError: boom xxxxxxxxxx"}
    listed = json.loads(by_stream.stdout)
    assert {letter["message_id"] for letter in listed} == {message.message_id for message in messages}
    assert {letter["actor_name"] for letter in listed} == {"explode"}
    assert all(letter["queue_name"] == "cli.jobs" for letter in listed)


def test_dlq_show_prints_one_dead_letter_in_full(redis_url, failing_jobs) -> None:
    letters, messages, _, _ = failing_jobs
    oldest = frameflow(redis_url, "dlq", "show", "cli.jobs")
    long_one = next(letter for letter in letters.list() if letter.message.args == ("x" * 500,))
    named = frameflow(redis_url, "dlq", "show", "cli.jobs", long_one.entry_id)

    assert oldest.exit_code == 0, oldest.output
    assert f"dead letter {letters.list()[0].entry_id} of cli.jobs" in oldest.stdout
    assert table_row(oldest.stdout, "reason")[1] == "ValueError: boom first"
    assert table_row(oldest.stdout, "actor")[1] == "explode"
    assert table_row(oldest.stdout, "message id")[1] == messages[0].message_id
    assert table_row(oldest.stdout, "args[0]")[1] == "first"
    assert table_row(named.stdout, "args[0]")[1] == "<500 characters>"
    assert table_row(named.stdout, "message id")[1] == messages[1].message_id


def test_dlq_requeue_puts_dead_letters_back_on_their_queue(redis_url, broker, failing_jobs) -> None:
    letters, _, healed, done = failing_jobs
    healed.update({"first", "x" * 500})
    first = letters.list()[0]

    one = frameflow(redis_url, "dlq", "requeue", "cli.jobs", first.entry_id)
    assert one.exit_code == 0, one.output
    assert one.stdout.strip() == "requeued 1 dead letter(s) to cli.jobs"
    wait_for(lambda: done == ["first"], what="the requeued message to run")
    assert len(letters) == 1

    missing = frameflow(redis_url, "dlq", "requeue", "cli.jobs", "1-1")
    assert missing.exit_code == 1 and "no dead letter 1-1 in cli.jobs" in missing.output

    rest = frameflow(redis_url, "dlq", "requeue", "cli.jobs")
    assert rest.stdout.strip() == "requeued 1 dead letter(s) to cli.jobs"
    broker.join("cli.jobs")
    assert sorted(done) == ["first", "x" * 500] and len(letters) == 0


def test_dlq_purge_asks_first_and_deletes_every_dead_letter(redis_url, failing_jobs) -> None:
    letters, _, _, _ = failing_jobs
    refused = frameflow(redis_url, "dlq", "purge", "cli.jobs", input="n\n")
    assert refused.exit_code == 1 and "Delete the 2 dead letter(s) of cli.jobs?" in refused.output
    assert len(letters) == 2

    purged = frameflow(redis_url, "dlq", "purge", "cli.jobs", "--yes")
    assert purged.exit_code == 0
    assert purged.stdout.strip() == "purged 2 dead letter(s) of cli.jobs"
    assert len(letters) == 0
    assert frameflow(redis_url, "dlq", "list", "cli.jobs").stdout.strip() == "no dead letters in cli.jobs"


def test_dlq_of_an_unknown_queue_is_one_line_and_exit_code_1(redis_url, redis_client) -> None:
    result = frameflow_process("--redis-url", redis_url, "dlq", "list", "no.such.queue")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: unknown queue 'no.such.queue': no messages, delayed messages or dead letters (frameflow queues)"
    ]
    bad = frameflow(redis_url, "dlq", "list", "bad name!")
    assert bad.exit_code == 1 and "invalid queue name 'bad name!'" in bad.output


# -- deregister, drain -----------------------------------------------------------------------
def test_deregister_reroutes_a_dead_processors_frames_to_a_live_peer(redis_url, redis_client) -> None:
    register_fake(redis_client, "dead-1", ("faces",))
    publish(redis_url, "faces", 3)
    redis_client.delete("frameflow:processor:dead-1")  # its entry expired: dead, still indexed
    with running(RecordingProcessor("alive-2", ["faces"], redis_url), redis_client) as peer:
        result = frameflow(redis_url, "deregister", "dead-1")
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "deregistered dead-1; re-routed 3 queued frame(s) to live peers"
        wait_for(lambda: peer.calls == 3, what="the peer to process the three frames")
    assert "dead-1" not in ProcessorRegistry(redis_client).known_ids()
    assert redis_client.exists("frames:ready:dead-1") == 0


def test_deregistering_a_live_processor_says_it_will_come_back(redis_url, redis_client) -> None:
    registry = ProcessorRegistry(redis_client)
    with running(RecordingProcessor("alive-2", ["faces"], redis_url), redis_client):
        result = frameflow(redis_url, "deregister", "alive-2")
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("deregistered alive-2; it is alive (heartbeat ")
        assert "registers again at its next heartbeat" in result.stdout
        wait_for(lambda: registry.get("alive-2"), what="alive-2 to register again")
        unknown = frameflow(redis_url, "deregister", "nobody")
    assert unknown.exit_code == 1
    assert "unknown processor 'nobody' (live processors: alive-2)" in unknown.output


def test_drain_stops_routing_to_a_processor_which_finishes_its_queue(redis_url, redis_client) -> None:
    registry = ProcessorRegistry(redis_client)
    draining = RecordingProcessor("a-1", ["echo"], redis_url)
    draining.gate.clear()  # holds its frames, so they are still queued when the drain begins
    with running(draining, redis_client):
        publish(redis_url, "echo", 4)
        with running(RecordingProcessor("b-1", ["echo"], redis_url), redis_client) as peer:
            outcome: list = []
            command = threading.Thread(target=lambda: outcome.append(frameflow(redis_url, "drain", "a-1", "--wait")))
            command.start()
            wait_for(lambda: registry.get("a-1").draining, what="a-1 to be marked draining")
            targets = {target for target in publish_targets(redis_url, "echo", 6)}
            draining.gate.set()
            command.join(timeout=30)
            assert targets == {"b-1"}
            wait_for(lambda: peer.calls == 6, what="b-1 to process the six new frames")
            assert draining.calls == 4

            drained = outcome[0]
            assert drained.exit_code == 0, drained.output
            assert drained.stdout.splitlines() == [
                "draining a-1: no new frames are routed to it; 4 still queued for it",
                "drained a-1: its queue is empty",
            ]
            resumed = frameflow(redis_url, "drain", "a-1", "--resume")
            assert resumed.stdout.strip() == "resumed a-1: frames are routed to it again"
            assert registry.get("a-1").draining is False
            unknown = frameflow(redis_url, "drain", "nobody")
    assert unknown.exit_code == 1 and "unknown processor 'nobody' (live processors: a-1, b-1)" in unknown.output


def test_drain_wait_gives_up_after_its_timeout(redis_url, redis_client) -> None:
    stuck = RecordingProcessor("a-1", ["echo"], redis_url, capacity=1)
    stuck.gate.clear()
    with running(stuck, redis_client):
        publish(redis_url, "echo", 3)
        result = frameflow(redis_url, "drain", "a-1", "--wait", "--timeout", "0.3")
    assert result.exit_code == 1
    assert "Error: a-1 still has 3 frame(s) queued after 0.3s" in result.output


# -- enqueue ---------------------------------------------------------------------------------
def test_enqueue_synthetic_sends_moving_jpeg_frames_at_the_rate(redis_url, redis_client) -> None:
    register_fake(redis_client, "sink-1", ("sample",))
    started = time.monotonic()
    result = frameflow(
        redis_url,
        "enqueue",
        "--count",
        "5",
        "--rate",
        "25",
        "--capability",
        "sample",
        "--width",
        "64",
        "--height",
        "48",
    )
    elapsed = time.monotonic() - started

    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith("sent 5 frame(s) from synthetic as cam-1: 5 routed, 0 parked, 0 dropped")
    assert elapsed >= 4 / 25  # five frames at 25 per second span four intervals
    frames = queue_entries(redis_client, "sink-1")
    assert [json.loads(frame[b"metadata"])["sequence"] for frame in frames] == [0, 1, 2, 3, 4]
    images = [frame[b"image"] for frame in frames]
    for frame, image in zip(frames, images, strict=True):
        assert (frame[b"width"], frame[b"height"], frame[b"format"], frame[b"camera_id"]) == (
            b"64",
            b"48",
            b"jpeg",
            b"cam-1",
        )
        with Image.open(io.BytesIO(image)) as decoded:
            assert (decoded.format, decoded.size) == ("JPEG", (64, 48))
    assert len(set(images)) == 5  # the shape moves and the time stamp changes
    assert_increasing_timestamps(frames)


def test_enqueue_video_publishes_its_decoded_frames(redis_url, redis_client, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    write_video(video, width=96, height=64, frames=12)
    register_fake(redis_client, "video-1", ("video",))

    result = frameflow(redis_url, "enqueue", "--source", str(video), "--rate", "200", "--capability", "video")

    assert result.exit_code == 0, result.output
    assert "sent 12 frame(s) from" in result.stdout and "12 routed, 0 parked, 0 dropped" in result.stdout
    frames = queue_entries(redis_client, "video-1")
    assert len(frames) == 12
    assert {(frame[b"width"], frame[b"height"], frame[b"format"]) for frame in frames} == {(b"96", b"64", b"jpeg")}
    assert_increasing_timestamps(frames)
    metadata = [json.loads(frame[b"metadata"]) for frame in frames]
    assert [item["index"] for item in metadata] == list(range(12))
    assert all(item["file"] == "clip.mp4" for item in metadata)
    pts = [item["pts_s"] for item in metadata]
    assert pts == sorted(pts) and len(set(pts)) == 12
    brightness = []
    for frame in frames:
        with Image.open(io.BytesIO(frame[b"image"])) as decoded:
            assert decoded.size == (96, 64)
            brightness.append(ImageStat.Stat(decoded.convert("L")).mean[0])
    # The clip's frames are flat greys getting lighter by 15 a frame: each decoded frame is its own.
    assert brightness == sorted(brightness)
    assert all(abs(value - (20 + 15 * index)) < 8 for index, value in enumerate(brightness)), brightness


def test_enqueue_image_folder_sends_each_image_as_it_is(redis_url, redis_client, tmp_path: Path) -> None:
    sizes = {"a.png": (40, 30), "b.png": (50, 20), "c.jpg": (16, 16)}
    for name, size in sizes.items():
        Image.new("RGB", size, (10, 200, 30)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    register_fake(redis_client, "sink-1", ("sample",))

    result = frameflow(redis_url, "enqueue", "--source", str(tmp_path), "--rate", "100", "--capability", "sample")

    assert result.exit_code == 0, result.output
    frames = queue_entries(redis_client, "sink-1")
    assert [json.loads(frame[b"metadata"])["file"] for frame in frames] == ["a.png", "b.png", "c.jpg"]
    assert [(int(frame[b"width"]), int(frame[b"height"])) for frame in frames] == list(sizes.values())
    assert [frame[b"format"] for frame in frames] == [b"png", b"png", b"jpeg"]
    assert [frame[b"image"] for frame in frames] == [(tmp_path / name).read_bytes() for name in sizes]


def test_enqueue_counts_parked_and_dropped_frames(redis_url, redis_client) -> None:
    register_fake(redis_client, "tiny-1", ("tiny",), queue_bound=1, overflow="reject_newest")
    parked = frameflow(redis_url, "enqueue", "--count", "2", "--rate", "100", "--capability", "nobody")
    dropped = frameflow(redis_url, "enqueue", "--count", "3", "--rate", "100", "--capability", "tiny")
    assert "sent 2 frame(s) from synthetic as cam-1: 0 routed, 2 parked, 0 dropped" in parked.stdout
    assert "sent 3 frame(s) from synthetic as cam-1: 1 routed, 0 parked, 2 dropped" in dropped.stdout


# -- errors a person can act on --------------------------------------------------------------
def test_unreadable_video_is_one_line_without_traceback_unless_debug(redis_url, redis_client, tmp_path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video" * 100)
    plain = frameflow_process("--redis-url", redis_url, "enqueue", "--source", str(broken), "--capability", "x")
    debug = frameflow_process(
        "--debug", "--redis-url", redis_url, "enqueue", "--source", str(broken), "--capability", "x"
    )

    assert plain.returncode == 1
    assert plain.stderr.splitlines() == [f"Error: cannot read video {broken}: Invalid data found when processing input"]
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "SourceError: cannot read video" in debug.stderr


def test_bad_rate_and_missing_source_are_one_line_each(redis_url, redis_client) -> None:
    rate = frameflow_process("--redis-url", redis_url, "enqueue", "--rate", "0", "--capability", "x")
    source = frameflow_process("--redis-url", redis_url, "enqueue", "--source", "/no/such/place", "--capability", "x")
    assert (rate.returncode, rate.stderr.splitlines()) == (
        1,
        ["Error: bad rate 0: give frames per second above 0, e.g. --rate 5"],
    )
    assert (source.returncode, source.stderr.splitlines()) == (
        1,
        ["Error: no such source '/no/such/place': give 'synthetic', a folder of images or a video file"],
    )


def test_unreachable_redis_is_one_line_with_the_password_masked() -> None:
    url = f"redis://operator:s3cret@127.0.0.1:{free_port()}/0"
    result = frameflow_process("--redis-url", url, "processors")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"Error: cannot reach Redis at {url.replace('s3cret', '***')}: ")
    assert "s3cret" not in result.stderr + result.stdout


# -- helpers ---------------------------------------------------------------------------------
def publish(redis_url: str, capability: str, count: int) -> None:
    publish_targets(redis_url, capability, count)


def publish_targets(redis_url: str, capability: str, count: int) -> list[str]:
    producer = FrameProducer(redis_url)
    try:
        targets = []
        for _ in range(count):
            decision = producer.publish(camera_id="cam-1", image=IMAGE, capabilities=[capability], width=4, height=4)
            targets.extend(decision.targets)
        return targets
    finally:
        producer.close()


def assert_increasing_timestamps(frames: list[dict[bytes, bytes]]) -> None:
    stamps = [datetime.fromisoformat(frame[b"timestamp"].decode()) for frame in frames]
    assert all(earlier < later for earlier, later in itertools.pairwise(stamps)), stamps


def write_video(path: Path, *, width: int, height: int, frames: int) -> None:
    """An MPEG-4 clip of flat grey frames, each 15 levels lighter than the one before (from 20)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            grey = 20 + 15 * index
            frame = av.VideoFrame.from_image(Image.new("RGB", (width, height), (grey, grey, grey)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
