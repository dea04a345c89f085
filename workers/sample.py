"""The reference processor: no model, just the shape every processor has.
Copy this file to write a new one.

Run it the seed's way::

    REDIS_URL=redis://127.0.0.1:6379/0 python -m workers.sample

or as Dramatiq worker processes::

    REDIS_URL=redis://127.0.0.1:6379/0 dramatiq pipeline.broker workers.sample -p 2
"""

from __future__ import annotations

import base64
import hashlib

from pipeline import ProcessorClient
from pipeline.processes.launch import options_from_env, run_until_signalled
from pipeline.processes.processor import serve_with_dramatiq

#: What the sample processor offers and where its results go.
CAPABILITIES = ["sample"]
RESULT_STREAM = "samples:processed"


class SampleProcessor(ProcessorClient):
    """Decodes each frame and reports its size and checksum."""

    version = "1.0"

    async def process_frame(self, frame_data: dict[bytes, bytes]) -> dict | None:
        image = base64.b64decode(frame_data[b"image_data"], validate=True)
        return {
            "bytes": len(image),
            "sha1": hashlib.sha1(image).hexdigest(),
            "width": int(frame_data[b"width"]),
            "height": int(frame_data[b"height"]),
        }


def build() -> SampleProcessor:
    return SampleProcessor(
        capabilities=CAPABILITIES,
        result_stream=RESULT_STREAM,
        **options_from_env("sample-1", 10),
    )


processor = build()
serve_with_dramatiq(processor)

if __name__ == "__main__":
    run_until_signalled(processor)
