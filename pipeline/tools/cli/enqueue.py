"""``frameflow enqueue``: frames from a source (synthetic, images, a video) into the pipeline."""

from __future__ import annotations

import itertools
import math
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pipeline.cameras.masking import mask_camera_url
from pipeline.domain.registry import ProcessorRegistry

from .output import console, err_console, plain, until_interrupted

if TYPE_CHECKING:
    from .context import CliContext


# -- frames ----------------------------------------------------------------------------------
@click.command()
@click.option("--camera-id", default="cam-1", show_default=True, help="The camera the frames come from.")
@click.option(
    "--source",
    "source_spec",
    default="synthetic",
    show_default=True,
    help="'synthetic' (generated JPEGs), a folder of images, an image file, a video file, or a camera: "
    "rtsp://user:password@host/path (TCP; see `frameflow cameras` for UDP) or an http:// MJPEG stream or snapshot URL.",
)
@click.option(
    "--capability", "capabilities", multiple=True, required=True, help="A capability the frames need; repeat for more."
)
@click.option("--rate", default=5.0, show_default=True, help="Frames per second.")
@click.option(
    "--count",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Frames to send (0: until the source ends; the synthetic camera never does).",
)
@click.option("--loop", is_flag=True, help="Replay a folder or a video from the start when it ends.")
@click.option("--width", default=320, show_default=True, help="Width of synthetic frames.")
@click.option("--height", default=240, show_default=True, help="Height of synthetic frames.")
@click.option(
    "--quality",
    default=85,
    show_default=True,
    type=click.IntRange(1, 95),
    help="JPEG quality of generated and decoded frames.",
)
@click.option(
    "--max-age-ms",
    default=5000,
    show_default=True,
    type=click.IntRange(min=1),
    help="How long a frame stays worth processing.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse (exit 1) a capability no processor has ever offered, instead of warning and parking its frames.",
)
@click.pass_obj
def enqueue(
    obj: CliContext,
    camera_id: str,
    source_spec: str,
    capabilities: tuple[str, ...],
    rate: float,
    count: int,
    loop: bool,
    width: int,
    height: int,
    quality: int,
    max_age_ms: int,
    strict: bool,
) -> None:
    """Publish frames from a source at a rate, routed by capability; shows sent / routed / parked / dropped."""
    from pipeline.cameras.live import open_frames
    from pipeline.processes.producer import FrameProducer

    if not (math.isfinite(rate) and rate > 0):
        raise click.ClickException(f"bad rate {rate:g}: give frames per second above 0, e.g. --rate 5")
    source = open_frames(source_spec, width=width, height=height, loop=loop, quality=quality, fps=rate)
    _check_capabilities(obj, capabilities, strict)
    producer = FrameProducer(redis_client=obj.client(), max_age_ms=max_age_ms)
    totals = dict.fromkeys(("sent", "routed", "parked", "dropped"), 0)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn() if count else TextColumn(""),
        MofNCompleteColumn() if count else TextColumn("{task.completed} sent"),
        TextColumn("routed {task.fields[routed]}  parked {task.fields[parked]}  dropped {task.fields[dropped]}"),
        TimeElapsedColumn(),
        console=err_console,
    )
    started = time.monotonic()
    stamp = datetime.now(UTC) - timedelta(seconds=1)
    with until_interrupted(), progress:
        task = progress.add_task(
            f"{camera_id} ← {mask_camera_url(source_spec)}", total=count or None, routed=0, parked=0, dropped=0
        )
        try:
            for index, frame in enumerate(itertools.islice(source, count or None)):
                pause = started + index / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # pacing to --rate
                # Capture time, strictly increasing even when the clock is coarse.
                stamp = max(datetime.now(UTC), stamp + timedelta(microseconds=1))
                decision = producer.publish(
                    camera_id=camera_id,
                    image=frame.image,
                    capabilities=list(capabilities),
                    width=frame.width,
                    height=frame.height,
                    format=frame.format,
                    metadata=frame.metadata,
                    timestamp=stamp,
                )
                totals["sent"] += 1
                totals["routed"] += len(decision.targets) > decision.dropped  # reached at least one queue
                totals["parked"] += bool(decision.parked)
                totals["dropped"] += decision.dropped
                progress.update(task, advance=1, **{name: totals[name] for name in ("routed", "parked", "dropped")})
        finally:
            producer.close()
    if not err_console.is_terminal:
        err_console.line()  # after the progress bar's last state
    shown = mask_camera_url(source_spec)
    console.print(
        f"sent {totals['sent']} frame(s) from {shown} as {camera_id}: {totals['routed']} routed, "
        f"{totals['parked']} parked, {totals['dropped']} dropped in {time.monotonic() - started:.1f}s"
    )


def _check_capabilities(obj: CliContext, capabilities: tuple[str, ...], strict: bool) -> None:
    """Warn (refuse with ``strict``) when no processor ever registered with a capability the frames
    need: a typo would otherwise park every frame, silently, until a processor offers it."""
    offered = ProcessorRegistry(obj.client(), obj.namespace).offered_capabilities()
    unknown = [capability for capability in capabilities if capability not in offered]
    if not unknown:
        return
    known = ", ".join(sorted(offered)) or "none yet"
    message = (
        f"no processor has ever offered {', '.join(repr(name) for name in unknown)} "
        f"(capabilities offered so far: {known})"
    )
    if strict:
        raise click.ClickException(message)
    err_console.print(f"warning: {plain(message)}; its frames will be parked until a processor offers it")
