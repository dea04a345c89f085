"""A small processor for process-level tests: ``python -m tests.echo_processor ID CAPABILITY...``.

It answers every frame with ``{"echo": <frame_id>}`` after ``ECHO_DELAY_S`` seconds
(default 0.02) on the ``echo:results`` stream, heartbeating every ``ECHO_HEARTBEAT_S`` (0.5) s.
``ECHO_CAPACITY`` (2) sets its capacity, ``ECHO_QUEUE_BOUND`` (100; 0: unbounded) its queue bound,
``ECHO_AFFINITY`` (``camera``; default none) its affinity. ``ECHO_RESULTS`` names another result stream;
with ``ECHO_BOX`` (``x1,y1,x2,y2``) every answer is a detector's: one ``person`` (0.9) in that box.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from pipeline import ProcessorClient


class EchoProcessor(ProcessorClient):
    queue_bound = int(os.environ.get("ECHO_QUEUE_BOUND", "100"))

    async def process_frame(self, frame_data: dict[bytes, bytes]) -> dict:
        await asyncio.sleep(float(os.environ.get("ECHO_DELAY_S", "0.02")))
        answer: dict = {"echo": frame_data[b"frame_id"].decode()}
        if box := os.environ.get("ECHO_BOX"):
            detection = {"label": "person", "score": 0.9, "box": [float(value) for value in box.split(",")]}
            answer.update(objects_detected=1, objects=[detection])
        return answer


def main(argv: list[str]) -> None:
    processor_id, *capabilities = argv
    processor = EchoProcessor(
        processor_id=processor_id,
        capabilities=capabilities,
        orchestrator_url="unused",
        capacity=int(os.environ.get("ECHO_CAPACITY", "2")),
        result_stream=os.environ.get("ECHO_RESULTS", "echo:results"),
        health_check_interval=float(os.environ.get("ECHO_HEARTBEAT_S", "0.5")),
        affinity=os.environ.get("ECHO_AFFINITY") or None,
    )
    signal.signal(signal.SIGTERM, lambda *_: processor.stop())
    asyncio.run(processor.start())


if __name__ == "__main__":
    main(sys.argv[1:])
