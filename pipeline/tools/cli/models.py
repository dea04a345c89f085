"""``frameflow models``: the weights the processors in ``workers/`` load (see :mod:`pipeline.tools.models`)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from pipeline.tools.models import FACENET_PYTORCH, FACENET_PYTORCH_VERSION, MTCNN_FILES, fetch_mtcnn_weights, model_dir

console = Console()


@click.group()
def models() -> None:
    """Model weights for the face and object detection processors."""


@models.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="The model cache [default: FRAMEFLOW_MODEL_DIR, else ~/.cache/frameflow/models].",
)
@click.option(
    "--wheel",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Extract from this {FACENET_PYTORCH} {FACENET_PYTORCH_VERSION} wheel instead of downloading it.",
)
def fetch(directory: Path | None, wheel: Path | None) -> None:
    """Fetch the MTCNN face detection weights into the model cache.

    They come from the facenet-pytorch wheel on PyPI (MIT licence), downloaded with
    pip without its dependencies and never installed; the three files are checked
    against their known SHA-256. Object detection uses torchvision's own weights
    (or FRAMEFLOW_OBJECT_WEIGHTS), which this command does not fetch.
    """
    target = fetch_mtcnn_weights(directory.expanduser() if directory else model_dir(), wheel=wheel)
    console.print(f"MTCNN weights ({', '.join(MTCNN_FILES)}) in [bold]{target}[/]")
