"""The object detection processor: weights from a checkpoint (or torchvision's cache, offline),
its results' format, boxes in pixels of the frame, COCO label names.

No pretrained weights can be downloaded here, so the tests save checkpoints of
untrained detectors and load them the way a deployment loads its own; with a
score threshold of 0 an untrained detector still returns its best 300 boxes.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image

from pipeline import FrameflowError, FrameProducer, ProcessorRegistry
from pipeline.domain.results import wait_for_results
from pipeline.errors import ImageDecodeError, WeightsMissing
from workers.settings import ModelSettings

from .model_support import close_boxes, corrupt_jpeg, encoded, frame_data, picture_frame
from .processor_harness import running

torch = pytest.importorskip("torch", reason="the model processors need torch: pip install -e '.[ml]'")
skimage_data = pytest.importorskip("skimage.data", reason="test pictures come from scikit-image (the dev extra)")

from workers.object_detection import (  # noqa: E402  (imports torch)
    COCO_CATEGORIES,
    DETECTORS,
    ObjectDetectionProcessor,
    build_detector,
    torchvision_cache_path,
)

SSDLITE = "ssdlite320_mobilenet_v3_large"
FASTER_RCNN = "fasterrcnn_mobilenet_v3_large_320_fpn"


def save_untrained(name: str, path: Path, *, seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    state = build_detector(name, random_weights=True).state_dict()
    torch.save(state, path)
    return state


@pytest.fixture(scope="module")
def ssdlite_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "ssdlite.pt"
    save_untrained(SSDLITE, path)
    return path


def processor(settings: ModelSettings, **options: Any) -> ObjectDetectionProcessor:
    options.setdefault("processor_id", "objects-1")
    options.setdefault("redis_url", "redis://unused")
    return ObjectDetectionProcessor(
        capabilities=["object_detection"], orchestrator_url="unused", settings=settings, **options
    )


@pytest.fixture(scope="module")
def loaded(ssdlite_checkpoint: Path) -> ObjectDetectionProcessor:
    detector = processor(ModelSettings(object_weights=str(ssdlite_checkpoint), object_score_threshold=0.0))
    detector.load()
    return detector


def astronaut_320() -> np.ndarray:
    """The astronaut at the SSDLite input size, 320 x 320."""
    return np.asarray(Image.fromarray(skimage_data.astronaut()).resize((320, 320), Image.Resampling.BILINEAR))


# -- weights ------------------------------------------------------------------------------------


def test_weights_load_from_the_checkpoint_named_by_the_environment(
    ssdlite_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAMEFLOW_OBJECT_WEIGHTS", str(ssdlite_checkpoint))
    detector = processor(ModelSettings.from_env())
    detector.load()
    saved = torch.load(ssdlite_checkpoint, weights_only=True)
    loaded_state = detector.model.state_dict()
    assert loaded_state.keys() == saved.keys()
    assert all(torch.equal(loaded_state[key].cpu(), saved[key]) for key in saved)


def test_torchvision_weights_are_read_from_its_cache_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _, weights = DETECTORS[SSDLITE]
    cached = torchvision_cache_path(weights)
    assert cached.parent == tmp_path / "hub" / "checkpoints"
    cached.parent.mkdir(parents=True)
    saved = save_untrained(SSDLITE, cached, seed=3)
    detector = processor(ModelSettings())
    detector.load()
    assert all(torch.equal(detector.model.state_dict()[key].cpu(), saved[key]) for key in saved)


def test_missing_weights_say_what_to_set_or_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsMissing) as caught:
        processor(ModelSettings()).load()
    message = str(caught.value)
    assert message.startswith(f"no weights for {SSDLITE}: set FRAMEFLOW_OBJECT_WEIGHTS to a checkpoint of it")
    assert str(tmp_path / "hub" / "checkpoints" / "ssdlite320_mobilenet_v3_large_coco-a79551df.pth") in message


def test_faster_rcnn_is_selectable_and_loads_a_checkpoint_without_batch_counters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchvision's pretrained Faster R-CNN has frozen batch norms: no num_batches_tracked.
    saved = save_untrained(FASTER_RCNN, tmp_path / "untrained.pt")
    state = {key: value for key, value in saved.items() if not key.endswith("num_batches_tracked")}
    assert len(state) < len(saved)
    torch.save({"model": state}, tmp_path / "frcnn.pt")
    monkeypatch.setenv("FRAMEFLOW_OBJECT_MODEL", FASTER_RCNN)
    monkeypatch.setenv("FRAMEFLOW_OBJECT_WEIGHTS", str(tmp_path / "frcnn.pt"))
    monkeypatch.setenv("FRAMEFLOW_OBJECT_SCORE_THRESHOLD", "0")
    detector = processor(ModelSettings.from_env())
    detector.load()
    assert type(detector.model).__name__ == "FasterRCNN"
    result = detector.process_frame(picture_frame(astronaut_320()))
    assert result["model"] == FASTER_RCNN
    assert result["objects_detected"] == len(result["objects"])


def test_a_checkpoint_of_another_model_is_refused_with_the_reason(
    ssdlite_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ModelSettings(object_model=FASTER_RCNN, object_weights=str(ssdlite_checkpoint))
    with pytest.raises(FrameflowError, match=f"the checkpoint {ssdlite_checkpoint} does not fit {FASTER_RCNN}"):
        processor(settings).load()


# -- results ------------------------------------------------------------------------------------


def test_results_list_objects_with_coco_names_scores_boxes_and_counts(loaded: ObjectDetectionProcessor) -> None:
    picture = skimage_data.astronaut()
    result = loaded.process_frame(picture_frame(picture, "JPEG"))
    assert set(result) == {"objects_detected", "objects", "counts", "image_width", "image_height", "model"}
    assert (result["image_width"], result["image_height"], result["model"]) == (512, 512, SSDLITE)
    objects = result["objects"]
    assert result["objects_detected"] == len(objects) > 0
    for item in objects:
        assert set(item) == {"label", "label_id", "score", "box"}
        assert item["label"] == COCO_CATEGORIES[item["label_id"]]
        assert item["label"] not in ("N/A", "__background__")
        assert 0.0 <= item["score"] <= 1.0
        x1, y1, x2, y2 = item["box"]
        assert 0 <= x1 <= x2 <= 512 and 0 <= y1 <= y2 <= 512
    assert [item["score"] for item in objects] == sorted((item["score"] for item in objects), reverse=True)
    assert result["counts"] == dict(collections.Counter(item["label"] for item in objects))
    assert COCO_CATEGORIES[:4] == ("__background__", "person", "bicycle", "car")


def test_the_score_threshold_drops_weaker_detections(ssdlite_checkpoint: Path) -> None:
    strict = processor(ModelSettings(object_weights=str(ssdlite_checkpoint), object_score_threshold=0.99))
    strict.load()
    result = strict.process_frame(picture_frame(astronaut_320()))
    assert result["objects_detected"] == 0 and result["objects"] == [] and result["counts"] == {}


@pytest.mark.parametrize(("x_times", "y_times"), [(2, 2), (2, 1), (1, 2)])
def test_boxes_are_in_pixels_of_the_frame_not_of_the_model_input(
    loaded: ObjectDetectionProcessor, x_times: int, y_times: int
) -> None:
    # SSDLite resizes every frame to 320 x 320. A frame that is the 320 x 320 picture with each pixel
    # repeated reaches the model as exactly that picture, so its boxes must be the same boxes, scaled.
    picture = astronaut_320()
    enlarged = picture.repeat(y_times, axis=0).repeat(x_times, axis=1)
    small = loaded.process_frame(picture_frame(picture))
    large = loaded.process_frame(picture_frame(enlarged))
    assert (large["image_width"], large["image_height"]) == (320 * x_times, 320 * y_times)
    assert large["objects_detected"] == small["objects_detected"] > 0
    for one, other in zip(small["objects"], large["objects"], strict=True):
        assert (one["label"], one["score"]) == (other["label"], other["score"])
        x1, y1, x2, y2 = one["box"]
        assert close_boxes([x1 * x_times, y1 * y_times, x2 * x_times, y2 * y_times], other["box"], 0.03), (one, other)


def test_a_corrupt_frame_fails_alone_in_its_batch(loaded: ObjectDetectionProcessor) -> None:
    picture = astronaut_320()
    good = picture_frame(picture, frame_id="good")
    corrupt = frame_data(corrupt_jpeg(picture), width=320, height=320, fmt="jpeg", frame_id="bad")
    outcomes = loaded.process_batch([good, corrupt, good])
    assert isinstance(outcomes[1], ImageDecodeError)
    assert str(outcomes[1]).startswith("frame bad: cannot decode jpeg image of ")
    assert outcomes[0] == outcomes[2] == loaded.process_frame(good)
    with pytest.raises(ImageDecodeError):
        loaded.process_frame(corrupt)


# -- as a processor -----------------------------------------------------------------------------


def test_the_model_is_loaded_and_warm_before_the_processor_registers(
    redis_url: str, redis_client: redis.Redis, ssdlite_checkpoint: Path
) -> None:
    registered_while_loading: list[bool] = []

    class Watched(ObjectDetectionProcessor):
        def load_model(self) -> None:
            registered_while_loading.append(ProcessorRegistry(redis_client).get(self.processor_id) is not None)
            super().load_model()

    settings = ModelSettings(object_weights=str(ssdlite_checkpoint), object_score_threshold=0.0)
    detector = Watched(
        processor_id="objects-1",
        capabilities=["object_detection"],
        orchestrator_url="unused",
        redis_url=redis_url,
        result_stream="objects:detected",
        health_check_interval=0.5,
        settings=settings,
    )
    producer = FrameProducer(redis_url)
    picture = skimage_data.astronaut()
    try:
        with running(detector, redis_client, timeout=60):
            assert registered_while_loading == [False]
            decision = producer.publish(
                camera_id="porch",
                capabilities=["object_detection"],
                image=encoded(picture, "JPEG"),
                width=512,
                height=512,
            )
            (published,) = wait_for_results(redis_client, "objects:detected", 1, timeout_s=30)
    finally:
        producer.close()
    assert published["frame_id"] == decision.frame_id
    assert (published["camera_id"], published["processor_id"]) == ("porch", "objects-1")
    objects = json.loads(published["objects"])
    assert int(published["objects_detected"]) == len(objects) > 0
    assert json.loads(published["counts"]) == dict(collections.Counter(item["label"] for item in objects))
