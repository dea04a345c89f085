"""Object detection: a torchvision COCO detector on batches of frames.

``FRAMEFLOW_OBJECT_MODEL`` picks ``ssdlite320_mobilenet_v3_large`` (the default)
or ``fasterrcnn_mobilenet_v3_large_320_fpn``. Results go to ``objects:detected``:
``objects_detected``, ``objects`` (each with ``label``, ``label_id``, ``score``
and ``box``: x1, y1, x2, y2 in pixels of the frame, whatever size the model
resized it to), and ``counts`` per label. Detections under
``FRAMEFLOW_OBJECT_SCORE_THRESHOLD`` (0.5) are dropped.

Weights, in this order, and nothing is ever downloaded at run time:

* ``FRAMEFLOW_OBJECT_WEIGHTS``: a checkpoint of the chosen model (its state dict,
  or a dict holding it under ``model`` or ``state_dict``), read with
  ``torch.load(weights_only=True)``;
* torchvision's COCO weights, from its cache (``$TORCH_HOME/hub/checkpoints``),
  where torchvision put them the first time it ran with network access.

Run it the seed's way::

    REDIS_URL=redis://127.0.0.1:6379/0 python -m workers.object_detection

or as Dramatiq worker processes::

    REDIS_URL=redis://127.0.0.1:6379/0 dramatiq pipeline.broker workers.object_detection -p 1

Environment: ``PROCESSOR_ID`` (``object-detection-1``), ``PROCESSOR_CAPACITY`` (8),
``HEALTH_CHECK_INTERVAL`` (5), and the model settings of :mod:`workers.settings`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from torch import nn
from torchvision.models import detection
from torchvision.models._api import WeightsEnum

from pipeline import FrameflowError
from pipeline.errors import WeightsMissing
from pipeline.processes.launch import options_from_env, run_until_signalled
from pipeline.processes.processor import serve_with_dramatiq

from .settings import ModelSettings
from .torch_runtime import TorchProcessor

#: What the object processor offers and where its results go.
CAPABILITIES = ["object_detection"]
RESULT_STREAM = "objects:detected"

#: COCO's category names by label id, as torchvision's detectors number them (metadata shipped
#: with torchvision: reading it downloads nothing). Ids named ``N/A`` are unused by COCO.
COCO_CATEGORIES: tuple[str, ...] = tuple(detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1.meta["categories"])
_NOT_OBJECTS = frozenset({"__background__", "N/A"})

#: The detectors, by ``FRAMEFLOW_OBJECT_MODEL`` name: their builder and torchvision's COCO weights.
DETECTORS: dict[str, tuple[Callable[..., nn.Module], WeightsEnum]] = {
    "ssdlite320_mobilenet_v3_large": (
        detection.ssdlite320_mobilenet_v3_large,
        detection.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1,
    ),
    "fasterrcnn_mobilenet_v3_large_320_fpn": (
        detection.fasterrcnn_mobilenet_v3_large_320_fpn,
        detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
    ),
}


def torchvision_cache_path(weights: WeightsEnum) -> Path:
    """Where torchvision keeps ``weights`` once downloaded (``$TORCH_HOME/hub/checkpoints/<file>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlsplit(weights.url).path).name


def build_detector(name: str, weights_path: str | Path | None = None, *, random_weights: bool = False) -> nn.Module:
    """The detector ``name`` with its weights (see the module docstring), in eval mode, on the CPU.

    ``random_weights`` accepts an untrained model when no weights are found (benchmarks measure
    speed with it); otherwise their absence raises :class:`WeightsMissing` saying what to do.
    """
    if name not in DETECTORS:
        raise FrameflowError(f"unknown object model {name!r}: choose one of {', '.join(DETECTORS)}")
    builder, weights = DETECTORS[name]
    if weights_path:
        # weights_backbone=None: nothing downloads; the checkpoint supplies every weight.
        model = builder(weights=None, weights_backbone=None, num_classes=len(COCO_CATEGORIES))
        load_checkpoint(model, Path(weights_path).expanduser(), name)
        return model.eval()
    cached = torchvision_cache_path(weights)
    if cached.is_file():
        return builder(weights=weights, weights_backbone=None, progress=False).eval()
    if random_weights:
        return builder(weights=None, weights_backbone=None, num_classes=len(COCO_CATEGORIES)).eval()
    raise WeightsMissing(
        f"no weights for {name}: set FRAMEFLOW_OBJECT_WEIGHTS to a checkpoint of it, or put torchvision's "
        f"{weights} file in {cached} (torchvision downloads it there on a host with network access: "
        f"python -c \"from torchvision.models import detection; detection.{name}(weights='DEFAULT')\" "
        f"with the same TORCH_HOME)"
    )


def load_checkpoint(model: nn.Module, path: Path, name: str) -> None:
    """Load the state dict in ``path`` into ``model``, every key accounted for.

    Only ``num_batches_tracked`` may be missing: torchvision's pretrained Faster R-CNN uses
    frozen batch norms, which have none, where an untrained one has ordinary ones.
    """
    if not path.is_file():
        raise WeightsMissing(f"FRAMEFLOW_OBJECT_WEIGHTS names {path}, which is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise FrameflowError(f"cannot read the checkpoint {path}: {error}") from None
    for key in ("model", "state_dict"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise FrameflowError(f"the checkpoint {path} holds a {type(state).__name__}, not a state dict")
    try:
        outcome = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise FrameflowError(f"the checkpoint {path} does not fit {name}: {error}") from None
    missing = [key for key in outcome.missing_keys if not key.endswith("num_batches_tracked")]
    if missing or outcome.unexpected_keys:
        raise FrameflowError(
            f"the checkpoint {path} does not fit {name}: {len(missing)} weights missing ({', '.join(missing[:3])}), "
            f"{len(outcome.unexpected_keys)} unexpected ({', '.join(outcome.unexpected_keys[:3])})"
        )


class ObjectDetectionProcessor(TorchProcessor):
    """Finds COCO objects in every frame.

    ``random_weights`` (benchmarks only) runs an untrained model when no weights are found.
    """

    version = "1.0"

    def __init__(self, *, random_weights: bool = False, **options: Any) -> None:
        super().__init__(**options)
        self.model_name = self.settings.object_model
        self.score_threshold = self.settings.object_score_threshold
        self.random_weights = random_weights
        self.model: nn.Module | None = None

    def load_model(self) -> None:
        model = build_detector(self.model_name, self.settings.object_weights, random_weights=self.random_weights)
        self.model = model.to(self.device)

    def detect(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        assert self.model is not None, "load() first"
        # The model resizes each picture to its input size and maps its boxes back to the picture's pixels.
        outputs = self.model([image.float().div_(255) for image in images])
        return [self._result(image, output) for image, output in zip(images, outputs, strict=True)]

    def _result(self, image: torch.Tensor, output: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        keep = output["scores"] >= self.score_threshold
        boxes = output["boxes"][keep].float().cpu().tolist()
        labels = output["labels"][keep].cpu().tolist()
        scores = output["scores"][keep].float().cpu().tolist()
        objects = [
            {"label": COCO_CATEGORIES[label], "label_id": label, "score": round(score, 4), "box": _rounded(box)}
            for box, label, score in zip(boxes, labels, scores, strict=True)
            if 0 <= label < len(COCO_CATEGORIES) and COCO_CATEGORIES[label] not in _NOT_OBJECTS
        ]
        objects.sort(key=lambda item: item["score"], reverse=True)
        return {
            "objects_detected": len(objects),
            "objects": objects,
            "counts": dict(collections.Counter(item["label"] for item in objects).most_common()),
            "image_width": int(image.shape[-1]),
            "image_height": int(image.shape[-2]),
            "model": self.model_name,
        }


def _rounded(box: list[float]) -> list[float]:
    return [round(value, 2) for value in box]


def build(settings: ModelSettings | None = None) -> ObjectDetectionProcessor:
    return ObjectDetectionProcessor(
        capabilities=CAPABILITIES,
        result_stream=RESULT_STREAM,
        settings=settings,
        **options_from_env("object-detection-1", 8),
    )


processor = build()
serve_with_dramatiq(processor)

if __name__ == "__main__":
    run_until_signalled(processor)
