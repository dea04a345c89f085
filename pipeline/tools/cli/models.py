"""``frameflow models``: the weights the processors in ``workers/`` load (see :mod:`pipeline.tools.models`
and :mod:`pipeline.tools.hand_model`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console

from pipeline.tools.hand_model import MEDIAPIPE, MEDIAPIPE_VERSION, fetch_hand_landmarker
from pipeline.tools.models import FACENET_PYTORCH, FACENET_PYTORCH_VERSION, MTCNN_FILES, fetch_mtcnn_weights, model_dir

console = Console()

#: What ``fetch`` can fetch: name -> (what it is, the wheel's file-name prefix, the fetch function).
FETCHABLE: dict[str, tuple[str, str, Callable[..., Path]]] = {
    "mtcnn": (f"MTCNN weights ({', '.join(MTCNN_FILES)})", "facenet_pytorch-", fetch_mtcnn_weights),
    "hands": ("hand landmarker (hand_landmarker.task)", "mediapipe-", fetch_hand_landmarker),
}


@click.group()
def models() -> None:
    """Model weights for the face and gesture detection processors."""


@models.command()
@click.argument("names", nargs=-1, type=click.Choice(sorted(FETCHABLE)))
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="The model cache [default: FRAMEFLOW_MODEL_DIR, else ~/.cache/frameflow/models].",
)
@click.option(
    "--wheel",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Extract from this {FACENET_PYTORCH} {FACENET_PYTORCH_VERSION} or {MEDIAPIPE} {MEDIAPIPE_VERSION} "
    "wheel instead of downloading it (fetches what that wheel holds).",
)
def fetch(names: tuple[str, ...], directory: Path | None, wheel: Path | None) -> None:
    """Fetch model weights into the model cache: NAMES among mtcnn and hands (default: both).

    The MTCNN face detection weights come from the facenet-pytorch wheel on PyPI (MIT
    licence), the hand landmarker from the mediapipe 0.10.21 wheel (Apache-2.0); each
    is downloaded with pip without its dependencies and never installed, and its files
    are checked against their known SHA-256. Object detection uses torchvision's own
    weights (or FRAMEFLOW_OBJECT_WEIGHTS), which this command does not fetch.
    """
    root = directory.expanduser() if directory else model_dir()
    if wheel is not None:
        names = tuple(name for name, (_, prefix, _) in FETCHABLE.items() if wheel.name.startswith(prefix))
        if not names:
            raise click.UsageError(f"{wheel.name} is neither a {FACENET_PYTORCH} nor a {MEDIAPIPE} wheel")
    for name in names or tuple(FETCHABLE):
        what, _, fetch_one = FETCHABLE[name]
        target = fetch_one(root, wheel=wheel)
        console.print(f"{what} in [bold]{target}[/]")
