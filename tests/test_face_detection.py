"""The face detection processor: MTCNN weights fetched by ``frameflow models fetch``, the face in
scikit-image's astronaut photograph, none in a blank picture, batches equal to frames one at a time.

The weights are downloaded once per session from PyPI (the facenet-pytorch wheel, about 2 MB).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from click.testing import CliRunner

from pipeline import FrameProducer
from pipeline.domain.results import wait_for_results
from pipeline.errors import WeightsMissing
from pipeline.tools.models import MTCNN_FILES, ModelFetchError, fetch_mtcnn_weights
from workers.settings import ModelSettings

from .model_support import encoded, mtcnn_weights, picture_frame, same_detections
from .processor_harness import running

torch = pytest.importorskip("torch", reason="the model processors need torch: pip install -e '.[ml]'")
skimage_data = pytest.importorskip("skimage.data", reason="test pictures come from scikit-image (the dev extra)")

from workers.face_detection import FaceDetectionProcessor  # noqa: E402  (imports torch)
from workers.mtcnn import LANDMARKS  # noqa: E402

#: The astronaut's face in skimage.data.astronaut() (512 x 512), drawn by hand: hairline to chin, ear to ear.
ASTRONAUT_FACE = (178.0, 60.0, 268.0, 172.0)


def iou(a: list[float] | tuple[float, ...], b: list[float] | tuple[float, ...]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def processor(weights: Path | None, **options: Any) -> FaceDetectionProcessor:
    options.setdefault("processor_id", "faces-1")
    options.setdefault("redis_url", "redis://unused")
    settings = ModelSettings(face_weights=str(weights)) if weights is not None else ModelSettings.from_env()
    return FaceDetectionProcessor(
        capabilities=["face_detection"], orchestrator_url="unused", settings=settings, **options
    )


@pytest.fixture(scope="module")
def faces() -> FaceDetectionProcessor:
    detector = processor(mtcnn_weights())
    detector.load()
    return detector


# -- weights ------------------------------------------------------------------------------------


def test_models_fetch_puts_the_checked_weights_in_the_model_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.tools.cli.main import main

    monkeypatch.setenv("FRAMEFLOW_MODEL_DIR", str(tmp_path / "cache"))
    outcome = CliRunner().invoke(main, ["models", "fetch"])
    assert outcome.exit_code == 0, outcome.output
    directory = tmp_path / "cache" / "mtcnn"
    assert f"in {directory}" in " ".join(outcome.output.split())
    for name, digest in MTCNN_FILES.items():
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest
    assert "MIT License" in (directory / "LICENSE.facenet-pytorch.md").read_text()
    # The processor finds them there with no other setting.
    detector = processor(None)
    detector.load()
    assert detector.weights_dir() == directory


def test_missing_weights_name_the_command_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMEFLOW_MODEL_DIR", str(tmp_path))
    with pytest.raises(WeightsMissing) as caught:
        processor(None).load()
    assert str(caught.value).startswith(
        f"MTCNN weights missing in {tmp_path / 'mtcnn'} (pnet.pt, rnet.pt, onet.pt): run 'frameflow models fetch'"
    )


def test_fetch_refuses_a_wheel_whose_weights_are_not_the_known_ones(tmp_path: Path) -> None:
    wheel = tmp_path / "facenet_pytorch-2.6.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in MTCNN_FILES:
            archive.writestr(f"facenet_pytorch/data/{name}", b"not the weights")
    with pytest.raises(ModelFetchError, match=r"pnet\.pt in .* does not have the expected SHA-256"):
        fetch_mtcnn_weights(tmp_path / "cache", wheel=wheel)
    assert not (tmp_path / "cache" / "mtcnn" / "pnet.pt").exists()


def test_fetch_from_a_wheel_already_downloaded(tmp_path: Path) -> None:
    wheel = tmp_path / "facenet_pytorch-2.6.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in MTCNN_FILES:
            archive.writestr(f"facenet_pytorch/data/{name}", (mtcnn_weights() / name).read_bytes())
    target = fetch_mtcnn_weights(tmp_path / "cache", wheel=wheel)
    assert sorted(path.name for path in target.glob("*.pt")) == sorted(MTCNN_FILES)


# -- detections ---------------------------------------------------------------------------------


def test_the_astronauts_face_is_found_with_its_box_on_the_face(faces: FaceDetectionProcessor) -> None:
    result = faces.process_frame(picture_frame(skimage_data.astronaut(), "JPEG"))
    assert (result["image_width"], result["image_height"], result["model"]) == (512, 512, "mtcnn")
    assert result["faces_detected"] == 1, result
    (face,) = result["faces"]
    assert face["score"] > 0.95
    assert iou(face["box"], ASTRONAUT_FACE) > 0.75, face["box"]
    marks = face["landmarks"]
    assert list(marks) == list(LANDMARKS)
    x1, y1, x2, y2 = face["box"]
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in marks.values())
    assert marks["left_eye"][0] < marks["right_eye"][0] and marks["mouth_left"][0] < marks["mouth_right"][0]
    assert max(marks["left_eye"][1], marks["right_eye"][1]) < marks["nose"][1]
    assert marks["nose"][1] < min(marks["mouth_left"][1], marks["mouth_right"][1])


@pytest.mark.parametrize("level", [0, 128, 255])
def test_a_blank_picture_has_no_face(faces: FaceDetectionProcessor, level: int) -> None:
    blank = np.full((480, 640, 3), level, dtype=np.uint8)
    result = faces.process_frame(picture_frame(blank, "JPEG"))
    assert result["faces_detected"] == 0 and result["faces"] == []
    assert (result["image_width"], result["image_height"]) == (640, 480)


def test_the_face_is_found_in_a_frame_of_any_size(faces: FaceDetectionProcessor) -> None:
    # The astronaut pasted at (300, 100) into a 1280 x 720 frame: the box moves with her.
    frame = np.full((720, 1280, 3), 40, dtype=np.uint8)
    frame[100:612, 300:812] = skimage_data.astronaut()
    result = faces.process_frame(picture_frame(frame, "JPEG"))
    moved = (ASTRONAUT_FACE[0] + 300, ASTRONAUT_FACE[1] + 100, ASTRONAUT_FACE[2] + 300, ASTRONAUT_FACE[3] + 100)
    assert [iou(face["box"], moved) > 0.75 for face in result["faces"]] == [True], result["faces"]


def test_a_batch_gives_the_results_of_its_frames_one_at_a_time(faces: FaceDetectionProcessor) -> None:
    astronaut = skimage_data.astronaut()
    camera = np.repeat(skimage_data.camera()[:, :, None], 3, axis=2)
    pictures = [astronaut, astronaut[:, ::-1].copy(), skimage_data.coffee(), camera, astronaut]
    frames = [picture_frame(picture, frame_id=f"f-{index}") for index, picture in enumerate(pictures)]
    batched = faces.process_batch(frames)
    alone = [faces.process_frame(frame) for frame in frames]
    assert [result["faces_detected"] for result in batched] == [result["faces_detected"] for result in alone]
    assert [result["faces_detected"] for result in alone][:3] == [1, 1, 0]
    for together, single in zip(batched, alone, strict=True):
        assert same_detections(together, single, "faces"), (together, single)


# -- as a processor -----------------------------------------------------------------------------


def test_faces_are_published_on_faces_detected(redis_url: str, redis_client: redis.Redis) -> None:
    detector = processor(
        mtcnn_weights(), redis_url=redis_url, result_stream="faces:detected", health_check_interval=0.5
    )
    producer = FrameProducer(redis_url)
    try:
        with running(detector, redis_client, timeout=60):
            sent = {
                producer.publish(
                    camera_id="hall", capabilities=["face_detection"], image=image, width=width, height=height
                ).frame_id: expected
                for image, width, height, expected in (
                    (encoded(skimage_data.astronaut(), "JPEG"), 512, 512, 1),
                    (encoded(np.full((240, 320, 3), 90, dtype=np.uint8), "JPEG"), 320, 240, 0),
                )
            }
            results = wait_for_results(redis_client, "faces:detected", 2, timeout_s=30)
    finally:
        producer.close()
    assert {result["frame_id"]: int(result["faces_detected"]) for result in results} == sent
    for result in results:
        listed = json.loads(result["faces"])
        assert len(listed) == int(result["faces_detected"])
        assert all(set(face) == {"box", "score", "landmarks"} for face in listed)
        assert result["processor_id"] == "faces-1" and result["camera_id"] == "hall"
