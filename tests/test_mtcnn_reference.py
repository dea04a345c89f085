"""frameflow's MTCNN (``workers/mtcnn.py``) against facenet-pytorch's own, run from the wheel the weights
come from: the same faces, boxes, scores and landmarks on the same pictures. The weights only work as
trained with the reference's crops and box conventions; with others a second "face" appeared on the
cameraman's ear (0.79) that the reference drops at R-Net (issue 20)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from .model_support import mtcnn_weights, reference_mtcnn_module

torch = pytest.importorskip("torch", reason="the face processor needs torch: pip install -e '.[ml]'")
skimage_data = pytest.importorskip("skimage.data", reason="test pictures come from scikit-image (the dev extra)")

from workers.mtcnn import MTCNN  # noqa: E402  (imports torch)

#: Pixels and score the two may differ by: float sums in another order.
PIXELS, SCORE = 0.05, 1e-4


def rgb(picture: np.ndarray) -> np.ndarray:
    return np.repeat(picture[:, :, None], 3, axis=2) if picture.ndim == 2 else picture


@pytest.fixture(scope="module")
def ours() -> MTCNN:
    model = MTCNN()
    model.load_weights(mtcnn_weights())
    return model.eval()


@pytest.fixture(scope="module")
def reference() -> object:
    return reference_mtcnn_module().MTCNN(keep_all=True, device="cpu")  # the wheel's own weights


@pytest.mark.parametrize("name", ["camera", "astronaut", "coffee"])
def test_the_same_faces_as_the_reference_mtcnn(ours: MTCNN, reference: object, name: str) -> None:
    picture = rgb(getattr(skimage_data, name)())
    expected_boxes, expected_scores, expected_marks = reference.detect(Image.fromarray(picture), landmarks=True)  # type: ignore[attr-defined]
    with torch.inference_mode():
        (found,) = ours([torch.from_numpy(picture).permute(2, 0, 1).contiguous()])
    if expected_boxes is None:
        assert found.boxes.shape[0] == 0, found
        return
    boxes, scores, marks = (
        np.asarray(value, dtype=np.float32) for value in (expected_boxes, expected_scores, expected_marks)
    )
    order = np.argsort(-scores)  # ours come best first
    assert found.boxes.shape[0] == len(order), (found.boxes.tolist(), boxes.tolist())
    np.testing.assert_allclose(found.boxes.numpy(), boxes[order], atol=PIXELS)
    np.testing.assert_allclose(found.scores.numpy(), scores[order], atol=SCORE)
    np.testing.assert_allclose(found.landmarks.numpy(), marks[order], atol=PIXELS)


def test_the_cameraman_has_one_face_not_two(ours: MTCNN) -> None:
    picture = rgb(skimage_data.camera())
    with torch.inference_mode():
        (found,) = ours([torch.from_numpy(picture).permute(2, 0, 1).contiguous()])
    assert found.boxes.shape[0] == 1 and float(found.scores[0]) > 0.99, found
