"""Face detection: the MTCNN cascade (``workers/mtcnn.py``) on batches of frames.

Results go to ``faces:detected``: ``faces_detected``, and ``faces``, each with
its ``box`` (x1, y1, x2, y2 in pixels of the frame), ``score`` and
``landmarks`` (eyes, nose, mouth corners as [x, y]).

The weights come from the model cache; fetch them once with::

    frameflow models fetch

Run it the seed's way::

    REDIS_URL=redis://127.0.0.1:6379/0 python -m workers.face_detection

or as Dramatiq worker processes::

    REDIS_URL=redis://127.0.0.1:6379/0 dramatiq pipeline.broker workers.face_detection -p 1

Environment: ``PROCESSOR_ID`` (``face-detection-1``), ``PROCESSOR_CAPACITY`` (10),
``HEALTH_CHECK_INTERVAL`` (5), and the model settings of :mod:`workers.settings`
(``FRAMEFLOW_FACE_WEIGHTS``, ``FRAMEFLOW_DEVICE``, ``FRAMEFLOW_MAX_BATCH``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.errors import WeightsMissing
from pipeline.processes.launch import options_from_env, run_until_signalled
from pipeline.processes.processor import serve_with_dramatiq
from pipeline.tools.models import FETCH_COMMAND, MTCNN_FILES, missing_mtcnn_weights, mtcnn_dir

from .mtcnn import LANDMARKS, MTCNN, CascadeConfig, Faces
from .settings import ModelSettings
from .torch_runtime import TorchProcessor

#: What the face processor offers and where its results go.
CAPABILITIES = ["face_detection"]
RESULT_STREAM = "faces:detected"


class FaceDetectionProcessor(TorchProcessor):
    """Finds faces, with five landmarks each, in every frame."""

    version = "1.0"
    model_name = "mtcnn"
    warm_up_size = (480, 640)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.model: MTCNN | None = None

    def weights_dir(self) -> Path:
        """``FRAMEFLOW_FACE_WEIGHTS``, else the model cache's ``mtcnn`` directory."""
        configured = self.settings.face_weights
        return Path(configured).expanduser() if configured else mtcnn_dir()

    def load_model(self) -> None:
        directory = self.weights_dir()
        missing = missing_mtcnn_weights(directory)
        if missing:
            raise WeightsMissing(
                f"MTCNN weights missing in {directory} ({', '.join(missing)}): run '{FETCH_COMMAND}' "
                f"(it downloads them from the facenet-pytorch wheel on PyPI into the model cache), "
                f"or set FRAMEFLOW_FACE_WEIGHTS to a directory holding {', '.join(MTCNN_FILES)}"
            )
        thresholds = (0.6, 0.7, self.settings.face_score_threshold)
        model = MTCNN(CascadeConfig(min_face_size=self.settings.face_min_size, thresholds=thresholds))
        model.load_weights(directory)
        self.model = model.to(self.device).eval()

    def warm_up(self) -> None:
        # A blank picture stops at P-Net, so each network also gets one input of its own.
        assert self.model is not None
        with self.inference():
            self.model.rnet(torch.zeros((1, 3, 24, 24), device=self.device))
            self.model.onet(torch.zeros((1, 3, 48, 48), device=self.device))
        super().warm_up()

    def detect(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        assert self.model is not None, "load() first"
        return [_result(image, faces) for image, faces in zip(images, self.model(images), strict=True)]


def _result(image: torch.Tensor, faces: Faces) -> dict[str, Any]:
    listed = [
        {
            "box": [round(value, 2) for value in box],
            "score": round(score, 4),
            "landmarks": {name: [round(x, 2), round(y, 2)] for name, (x, y) in zip(LANDMARKS, points, strict=True)},
        }
        for box, score, points in zip(
            faces.boxes.tolist(), faces.scores.tolist(), faces.landmarks.tolist(), strict=True
        )
    ]
    return {
        "faces_detected": len(listed),
        "faces": listed,
        "image_width": int(image.shape[-1]),
        "image_height": int(image.shape[-2]),
        "model": FaceDetectionProcessor.model_name,
    }


def build(settings: ModelSettings | None = None) -> FaceDetectionProcessor:
    return FaceDetectionProcessor(
        capabilities=CAPABILITIES,
        result_stream=RESULT_STREAM,
        settings=settings,
        **options_from_env("face-detection-1", 10),
    )


processor = build()
serve_with_dramatiq(processor)

if __name__ == "__main__":
    run_until_signalled(processor)
