"""Snapshots: the track's best frame as a JPEG with its boxes drawn (Pillow).

The picture comes from the copy the processor kept (:mod:`pipeline.domain.kept_images`, opt-in with
``FRAMEFLOW_SNAPSHOT_TTL_S`` on the processor); when there is none (not kept, expired, not
decodable) there is no snapshot and the events go on regardless.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

from PIL import Image, ImageDraw

from .tracks import Detection

#: Box colour and JPEG quality of a snapshot.
BOX_COLOUR = (255, 64, 0)
JPEG_QUALITY = 85


def render(picture: Image.Image, detections: Iterable[Detection]) -> bytes:
    """``picture`` (untouched) with a box and a ``label score`` caption per detection, as a JPEG."""
    canvas = picture.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(min(canvas.size) / 200))
    for detection in detections:
        if detection.box is None:
            continue
        x1, y1, x2, y2 = detection.box
        box = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
        draw.rectangle(box, outline=BOX_COLOUR, width=width)
        caption = f"{detection.label} {detection.score:.2f}"
        draw.text((box[0] + width, max(0, box[1] - 12)), caption, fill=BOX_COLOUR)
    output = io.BytesIO()
    canvas.save(output, format="JPEG", quality=JPEG_QUALITY)
    return output.getvalue()
