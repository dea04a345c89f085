"""Micro-batching: ``process_batch`` sees several frames at once, each frame keeps its own fate.

The batcher is tested on its own first; then processors that implement
``process_batch`` run against a real Redis: a toy one that needs no model, and
the object detector (only with torch installed).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from pipeline import FrameProducer, RedisStreamsBroker
from pipeline.domain.images import decode_frame_image
from pipeline.domain.results import wait_for_results
from pipeline.errors import BatchFailed, ImageDecodeError
from pipeline.processes.batching import FrameBatcher

from .model_support import corrupt_jpeg, encoded, picture_frame, same_detections
from .processor_harness import RecordingProcessor, running, wait_for

# -- the batcher ------------------------------------------------------------------------------


def recording(sizes: list[int], transform: Any = lambda item: item):
    def run(items: list[Any]) -> list[Any]:
        sizes.append(len(items))
        return [transform(item) for item in items]

    return run


def test_a_batch_holds_at_most_max_batch_items() -> None:
    sizes: list[int] = []
    batcher = FrameBatcher(recording(sizes, lambda item: item * 2), lambda: (4, 0.5))
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(batcher.submit, range(10)))
    batcher.close()
    assert results == [item * 2 for item in range(10)]
    assert sum(sizes) == 10
    assert max(sizes) == 4, sizes
    assert (batcher.batches, batcher.items) == (len(sizes), 10)


def test_a_batch_runs_on_one_of_the_submitting_threads_one_batch_at_a_time() -> None:
    """One hand-over per frame: the batch runs on a worker thread that submitted, not on a batcher
    thread of its own, and never beside another batch."""
    threads: list[str] = []
    concurrent, most_concurrent = [0], [0]
    lock = threading.Lock()

    def run(items: list[int]) -> list[int]:
        with lock:
            concurrent[0] += 1
            most_concurrent[0] = max(most_concurrent[0], concurrent[0])
        threads.append(threading.current_thread().name)
        time.sleep(0.01)  # a model's work, long enough for the other threads to queue up behind it
        with lock:
            concurrent[0] -= 1
        return [item * 2 for item in items]

    batcher = FrameBatcher(run, lambda: (4, 5.0))
    with ThreadPoolExecutor(10, thread_name_prefix="worker") as pool:
        results = list(pool.map(batcher.submit, range(10)))
    batcher.close()
    assert results == [item * 2 for item in range(10)]
    assert threads and all(name.startswith("worker") for name in threads), threads
    assert most_concurrent[0] == 1
    assert batcher.items == 10


def test_the_first_item_waits_at_most_max_wait_ms() -> None:
    batcher = FrameBatcher(recording([]), lambda: (8, 0.05))
    began = time.monotonic()
    assert batcher.submit("alone") == "alone"
    elapsed = time.monotonic() - began
    batcher.close()
    assert 0.045 <= elapsed < 1.0, elapsed


def test_a_batch_of_one_never_waits() -> None:
    batcher = FrameBatcher(recording([]), lambda: (1, 10.0))
    began = time.monotonic()
    assert batcher.submit("alone") == "alone"
    batcher.close()
    assert time.monotonic() - began < 1.0


def test_an_exception_in_the_outcomes_fails_only_its_item() -> None:
    sizes: list[int] = []
    batcher = FrameBatcher(
        recording(sizes, lambda item: ValueError(f"item {item} is bad") if item == 1 else item), lambda: (3, 5.0)
    )
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(batcher.submit, item) for item in range(3)]
        assert futures[0].result() == 0
        assert futures[2].result() == 2
        with pytest.raises(ValueError, match="item 1 is bad"):
            futures[1].result()
    batcher.close()
    assert sizes == [3]


def test_a_batch_that_raises_fails_each_item_with_the_cause() -> None:
    def run(items: list[Any]) -> list[Any]:
        raise RuntimeError("GPU fell off the bus")

    batcher = FrameBatcher(run, lambda: (2, 5.0))
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(batcher.submit, item) for item in range(2)]
        errors = []
        for future in futures:
            with pytest.raises(BatchFailed) as caught:
                future.result()
            errors.append(caught.value)
    batcher.close()
    assert str(errors[0]) == "process_batch failed on a batch of 2 frames: RuntimeError: GPU fell off the bus"
    assert isinstance(errors[0].__cause__, RuntimeError)
    assert errors[0] is not errors[1], "each frame gets its own error object"


def test_a_wrong_number_of_outcomes_fails_the_batch() -> None:
    batcher = FrameBatcher(lambda items: [], lambda: (1, 0.0))
    with pytest.raises(BatchFailed, match="process_batch returned 0 outcomes for 1 frames"):
        batcher.submit("lost")
    batcher.close()


def test_close_runs_what_waits_at_once_and_a_later_submit_starts_again() -> None:
    limits = [(8, 30.0)]
    batcher = FrameBatcher(recording([]), lambda: limits[0])
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(batcher.submit, "early")
        wait_for(lambda: batcher.pending == 1, what="the item to wait for a batch")
        began = time.monotonic()
        batcher.close(timeout=5)
        assert waiting.result(timeout=5) == "early"
        assert time.monotonic() - began < 5
    limits[0] = (1, 0.0)
    assert batcher.submit("late") == "late"
    batcher.close()


# -- a batched processor with no model, through Redis --------------------------------------------


class PixelProcessor(RecordingProcessor):
    """Decodes each frame and reports its size and mean pixel; remembers the frame ids of each batch."""

    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self.batches: list[list[str]] = []

    async def process_batch(self, frames: list[dict[bytes, bytes]]) -> list[dict | BaseException | None]:
        await asyncio.sleep(0)  # runs on the processor's event loop
        self.batches.append([frame[b"frame_id"].decode() for frame in frames])
        outcomes: list[dict | BaseException | None] = []
        for frame in frames:
            try:
                picture = np.asarray(decode_frame_image(frame))
            except ImageDecodeError as error:
                outcomes.append(error)
                continue
            outcomes.append({"size": list(picture.shape[:2]), "mean": round(float(picture.mean()), 3)})
        return outcomes


def gradient(height: int, width: int, shift: int) -> np.ndarray:
    rows = np.arange(height, dtype=np.uint16)[:, None, None]
    columns = np.arange(width, dtype=np.uint16)[None, :, None]
    return ((rows * 3 + columns * 5 + shift) % 256).astype(np.uint8).repeat(3, axis=2)


def publish_pictures(producer: FrameProducer, capability: str, pictures: list[np.ndarray]) -> list[str]:
    """Publish PNG frames of ``pictures``, and a corrupt JPEG third; return the frame ids in order."""
    ids = []
    for position, picture in enumerate(pictures):
        height, width = picture.shape[:2]
        image, fmt = (corrupt_jpeg(picture), "jpeg") if position == 2 else (encoded(picture), "png")
        decision = producer.publish(
            camera_id="cam-1", capabilities=[capability], image=image, width=width, height=height, format=fmt
        )
        assert decision.targets, decision
        ids.append(decision.frame_id)
    return ids


def dead_letters(redis_url: str, queue_name: str) -> list[Any]:
    broker = RedisStreamsBroker(redis_url)
    try:
        return broker.dead_letter_queue(queue_name).list()
    finally:
        broker.close()


def results_by_frame(client: redis.Redis, stream: str, count: int) -> dict[str, dict[str, str]]:
    results = wait_for_results(client, stream, count, timeout_s=60)
    assert len(results) == count, f"expected {count} results on {stream}, got {len(results)}"
    return {result["frame_id"]: result for result in results}


def test_batched_frames_get_their_own_results_and_a_corrupt_one_is_dead_lettered_alone(
    redis_url: str, redis_client: redis.Redis
) -> None:
    pictures = [gradient(48 + 8 * index, 64, shift=index * 17) for index in range(6)]
    batched = PixelProcessor("pixels-batched", ["pixels"], redis_url, capacity=8)
    batched.max_batch, batched.max_wait_ms = 8, 500
    producer = FrameProducer(redis_url)
    try:
        with running(batched, redis_client):
            ids = publish_pictures(producer, "pixels", pictures)
            results = results_by_frame(redis_client, "results:pixels-batched", 5)
            letters = wait_for(lambda: dead_letters(redis_url, batched.queue_name), what="the corrupt frame's letter")
    finally:
        producer.close()
    corrupt = ids[2]
    assert set(results) == set(ids) - {corrupt}
    for frame_id, picture in zip(ids, pictures, strict=True):
        if frame_id != corrupt:
            assert json.loads(results[frame_id]["size"]) == list(picture.shape[:2])
            assert float(results[frame_id]["mean"]) == round(float(picture.mean()), 3)
    (letter,) = letters
    assert letter.fields["frame_id"] == corrupt
    assert letter.reason.startswith(f"ImageDecodeError: frame {corrupt}: cannot decode jpeg image of ")
    # It shared a batch with good frames, and was not retried (no retry can decode it).
    batch_of_corrupt = next(batch for batch in batched.batches if corrupt in batch)
    assert len(batch_of_corrupt) > 1, batched.batches
    assert sum(batch.count(corrupt) for batch in batched.batches) == 1
    assert max(len(batch) for batch in batched.batches) > 1
    assert batched.stats.snapshot()["failed"] == 1


def test_batched_and_unbatched_processors_give_the_same_results(redis_url: str, redis_client: redis.Redis) -> None:
    pictures = [gradient(40 + 4 * index, 56, shift=index * 29) for index in range(5)]
    outcomes = {}
    for name, max_batch in (("pixels-one", 1), ("pixels-eight", 8)):
        processor = PixelProcessor(name, [name], redis_url, capacity=8)
        processor.max_batch, processor.max_wait_ms = max_batch, 300
        producer = FrameProducer(redis_url)
        try:
            with running(processor, redis_client):
                ids = publish_pictures(producer, name, pictures)
                results = results_by_frame(redis_client, f"results:{name}", 4)
        finally:
            producer.close()
        assert all(len(batch) == 1 for batch in processor.batches) == (max_batch == 1)
        outcomes[name] = [
            (results[frame_id]["size"], results[frame_id]["mean"]) if frame_id in results else None for frame_id in ids
        ]
    assert outcomes["pixels-one"] == outcomes["pixels-eight"]
    assert outcomes["pixels-one"][2] is None  # the corrupt frame, either way


# -- the object detector, batched through Redis and one frame at a time --------------------------


def test_object_detector_batched_through_redis_matches_frames_one_at_a_time(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch", reason="the model processors need torch: pip install -e '.[ml]'")
    skimage_data = pytest.importorskip("skimage.data", reason="test pictures come from scikit-image")
    from workers.object_detection import ObjectDetectionProcessor, build_detector
    from workers.settings import ModelSettings

    torch.manual_seed(7)
    checkpoint = tmp_path / "ssdlite.pt"
    torch.save(build_detector("ssdlite320_mobilenet_v3_large", random_weights=True).state_dict(), checkpoint)
    settings = ModelSettings(object_weights=str(checkpoint), object_score_threshold=0.0, max_batch=4, max_wait_ms=300)

    def processor() -> ObjectDetectionProcessor:
        return ObjectDetectionProcessor(
            processor_id="objects-batched",
            capabilities=["object_detection"],
            orchestrator_url="unused",
            redis_url=redis_url,
            capacity=4,
            result_stream="objects:detected",
            health_check_interval=0.5,
            settings=settings,
        )

    pictures = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea(), skimage_data.rocket()]
    batched = processor()
    producer = FrameProducer(redis_url)
    calls: list[int] = []
    run_batch = batched.process_batch

    def counting(frames: list[dict[bytes, bytes]]) -> list[Any]:
        calls.append(len(frames))
        return run_batch(frames)

    batched.process_batch = counting  # type: ignore[method-assign]
    try:
        with running(batched, redis_client, timeout=60):
            ids = publish_pictures(producer, "object_detection", pictures)
            results = results_by_frame(redis_client, "objects:detected", 3)
            letters = wait_for(lambda: dead_letters(redis_url, batched.queue_name), what="the corrupt frame's letter")
    finally:
        producer.close()
    assert max(calls) > 1, calls
    assert [letter.fields["frame_id"] for letter in letters] == [ids[2]]
    assert letters[0].reason.startswith("ImageDecodeError: ")

    alone = processor()
    alone.load()
    for frame_id, picture in zip(ids, pictures, strict=True):
        if frame_id == ids[2]:
            continue
        expected = alone.process_frame(picture_frame(picture, frame_id=frame_id))
        published = results[frame_id]
        got = {"objects": json.loads(published["objects"])}
        assert int(published["objects_detected"]) == expected["objects_detected"]
        assert same_detections(got, expected, "objects"), frame_id
        assert json.loads(published["counts"]) == expected["counts"]


def test_a_processor_without_process_batch_is_not_batched(redis_url: str) -> None:
    assert RecordingProcessor("plain", ["plain"], redis_url)._batcher is None
    assert PixelProcessor("batched", ["batched"], redis_url)._batcher is not None
