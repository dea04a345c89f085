"""``frameflow ingest``: route the original system's ``frames:metadata`` stream to frameflow's processors.

The process a migrating deployment runs beside its unchanged capture service; the work is
:class:`~pipeline.ingest.service.FrameIngest`'s, this module only reads its options.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click

from pipeline.ingest.mapping import ORIGINAL_STREAM, IngestConfig
from pipeline.ingest.service import FrameIngest
from pipeline.processes.producer import FrameProducer

from .context import CliContext


def _capability_map(entries: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    mapping: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        detection_type, _, capabilities = entry.partition("=")
        names = tuple(name.strip() for name in capabilities.split(",") if name.strip())
        if not detection_type.strip() or not names:
            expected = "DETECTION_TYPE=CAPABILITY[,CAPABILITY...]"
            raise click.BadParameter(f"{entry!r}: expected {expected}", param_hint="--map")
        mapping[detection_type.strip()] = names
    return mapping


@click.command()
@click.option("--stream", default=ORIGINAL_STREAM, show_default=True, help="The original's stream of frames.")
@click.option("--group", default="frameflow-ingest", show_default=True, help="The consumer group to read it with.")
@click.option("--consumer", default=None, help="This process's consumer name [default: host:pid].")
@click.option(
    "--map",
    "mappings",
    multiple=True,
    metavar="TYPE=CAP[,CAP]",
    help="Route metadata.detection_type TYPE to these capabilities; with any --map, unlisted types are "
    "dead-lettered (without: the detection type is the capability).",
)
@click.option("--default-detection-type", default=None, help="For entries whose metadata names none.")
@click.option("--image-key-field", default=None, help="Entry field naming a Redis key that holds the image.")
@click.option("--image-path-field", default=None, help="Entry field naming a file that holds the image.")
@click.option(
    "--image-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Image files must lie under this folder.",
)
@click.option("--dead-letters", default=None, help="Stream for entries that cannot be frames [default: STREAM:dead].")
@click.option("--max-age-ms", default=5000, show_default=True, type=click.IntRange(min=1), help="Frame max age.")
@click.pass_obj
def ingest(
    obj: CliContext,
    stream: str,
    group: str,
    consumer: str | None,
    mappings: tuple[str, ...],
    default_detection_type: str | None,
    image_key_field: str | None,
    image_path_field: str | None,
    image_root: Path | None,
    dead_letters: str | None,
    max_age_ms: int,
) -> None:
    """Read the original system's frame stream (detektr's frames:metadata) and route each entry, until SIGTERM.

    Entries are acknowledged once routed; those that cannot be frames (no image, unknown detection
    type, bad timestamp, ...) go to the dead-letter stream with the reason, and ingesting goes on.
    """
    if not obj.debug:
        logging.getLogger().setLevel(logging.INFO)
    config = IngestConfig(
        stream=stream,
        group=group,
        capability_map=_capability_map(mappings),
        default_detection_type=default_detection_type,
        image_key_field=image_key_field,
        image_path_field=image_path_field,
        image_root=image_root,
        dead_letters=dead_letters or f"{stream}:dead",
        max_age_ms=max_age_ms,
        **({"consumer": consumer} if consumer else {}),
    )
    client = obj.client()
    producer = FrameProducer(redis_client=client, max_age_ms=max_age_ms)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service = FrameIngest(client, producer, config, obj.namespace)
    try:
        service.run(stop)
    finally:
        producer.close()
    counts = ", ".join(f"{name} {count}" for name, count in sorted(service.counts.items())) or "nothing"
    click.echo(f"ingest stopped: {counts}")
