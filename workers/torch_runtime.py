"""What the torch processors share: device, precision and threads, frames as tensors,
and a model loaded and warmed up before the processor registers.

A subclass implements :meth:`TorchProcessor.load_model` and
:meth:`TorchProcessor.detect`; this base turns a batch of frames into decoded
images (each decoded once, by :func:`pipeline.domain.images.decode_frame_image`), runs
``detect`` once on all that decoded, and returns one outcome per frame: a
result, or the :class:`~pipeline.errors.ImageDecodeError` of a corrupt frame,
which fails that frame alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torchvision.transforms.functional import pil_to_tensor

from pipeline import FrameflowError, ProcessorClient
from pipeline.domain.images import decode_frame_image
from pipeline.errors import UnprocessableFrame

from .settings import ModelSettings

logger = logging.getLogger(__name__)


def choose_device(requested: str | None) -> torch.device:
    """``requested`` (checked), else CUDA when available, else the CPU."""
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FrameflowError(f"FRAMEFLOW_DEVICE={requested} but CUDA is not available (torch {torch.__version__})")
    return device


class TorchProcessor(ProcessorClient):
    """Base of the model processors (see the module docstring).

    Parameters: the :class:`~pipeline.ProcessorClient`'s, plus ``settings``
    (default: :meth:`ModelSettings.from_env`), which also sets ``max_batch`` and
    ``max_wait_ms``. Setting ``torch_threads`` changes torch's thread count for
    the whole process.
    """

    #: The model's name in results and logs.
    model_name: str = "model"
    #: The size (height, width) of the blank picture the warm-up runs on.
    warm_up_size: tuple[int, int] = (320, 320)

    def __init__(self, *, settings: ModelSettings | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.settings = settings or ModelSettings.from_env()
        self.max_batch = self.settings.max_batch
        self.max_wait_ms = self.settings.max_wait_ms
        self.device = choose_device(self.settings.device)
        half = self.settings.half if self.settings.half is not None else self.device.type == "cuda"
        if half and self.device.type != "cuda":
            logger.warning("Half precision is for GPUs; %s runs in full precision on %s.", self.model_name, self.device)
            half = False
        self.half = half
        if self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        self._loaded = threading.Event()
        self._load_lock = threading.Lock()

    # -- what a model processor implements -------------------------------------------------
    def load_model(self) -> None:
        """Load the model's weights onto ``self.device`` (eval mode). Raise ``WeightsMissing`` with what to do."""
        raise NotImplementedError

    def detect(self, images: list[torch.Tensor]) -> list[dict[str, Any]]:
        """One result dict per image (uint8 tensors, C x H x W, on ``self.device``), in the same order."""
        raise NotImplementedError

    def warm_up(self) -> None:
        """Run the model once so the first frame pays no one-off costs (allocations, kernel selection)."""
        height, width = self.warm_up_size
        with self.inference():
            self.detect([torch.full((3, height, width), 114, dtype=torch.uint8, device=self.device)])

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Load and warm up the model, then register and consume (no frame is routed here before)."""
        await asyncio.to_thread(self.load)
        await super().start()

    def load(self) -> None:
        """Load the model and warm it up, once: a second call returns at once, or waits for the first."""
        if self._loaded.is_set():
            return
        with self._load_lock:
            if self._loaded.is_set():
                return
            self.load_model()
            self.warm_up()
            self._loaded.set()
        logger.info("%s loaded on %s%s.", self.model_name, self.device, " (half precision)" if self.half else "")

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """No autograd; on a GPU with ``half``, float16 autocast (box arithmetic stays in float32)."""
        with torch.inference_mode():
            if self.half:
                with torch.autocast(device_type=self.device.type, dtype=torch.float16):
                    yield
            else:
                yield

    # -- frames ----------------------------------------------------------------------------
    def process_batch(self, frames: list[dict[bytes, bytes]]) -> list[dict | BaseException | None]:
        self.load()  # a no-op once start() loaded it; frames left over from a previous run may come first
        outcomes: list[dict | BaseException | None] = [None] * len(frames)
        images: list[torch.Tensor] = []
        positions: list[int] = []
        for position, frame in enumerate(frames):
            try:
                picture = decode_frame_image(frame)
            except UnprocessableFrame as error:
                outcomes[position] = error
                continue
            images.append(pil_to_tensor(picture).to(self.device, non_blocking=True))
            positions.append(position)
        if images:
            with self.inference():
                results = self.detect(images)
            for position, result in zip(positions, results, strict=True):
                outcomes[position] = result
        return outcomes

    def process_frame(self, frame_data: dict[bytes, bytes]) -> dict | None:  # type: ignore[override]
        """One frame through :meth:`process_batch` (the client itself always calls ``process_batch``)."""
        (outcome,) = self.process_batch([frame_data])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
