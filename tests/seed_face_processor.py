"""The seed migration guide's FaceRecognitionProcessor, pasted as the guide shows it.

Only the import line of ProcessorClient differs from the guide (and the
imports the guide leaves implicit, plus a stand-in model, are added above it).
Run as a script: the guide's ``__main__`` block is at the bottom, unchanged.
"""
# ruff: noqa: UP006, UP035 - the guide's own typing style is kept as pasted

import asyncio
import base64
import os
import signal
import time
from typing import Dict


class _StandInModel:
    """Finds one 'face' per 1000 bytes of image: deterministic, no weights needed."""

    def detect(self, image_data: bytes) -> list:
        return [{"box": [0, 0, 10, 10], "score": 0.9} for _ in range(len(image_data) // 1000)]


def load_face_detection_model() -> _StandInModel:
    return _StandInModel()


from pipeline import ProcessorClient  # noqa: E402 - the one line the migration changes


class FaceRecognitionProcessor(ProcessorClient):
    def __init__(self):
        super().__init__(
            processor_id="face-recognition-1",
            capabilities=["face_detection", "face_recognition"],
            orchestrator_url=os.getenv("ORCHESTRATOR_URL", "http://frame-buffer-v2:8002"),
            capacity=10,
            result_stream="faces:detected"
        )
        self.model = None

    async def start(self):
        # Load model before starting
        self.model = await self.load_model()
        await super().start()

    async def process_frame(self, frame_data: Dict[bytes, bytes]) -> Dict:
        """Process a single frame - this is the only method you need to implement."""
        # Extract frame data
        frame_id = frame_data[b"frame_id"].decode()
        image_data = base64.b64decode(frame_data[b"image_data"])

        # Your processing logic here
        faces = await self.detect_faces(image_data)

        # Return results
        return {
            "frame_id": frame_id,
            "faces_detected": len(faces),
            "faces": faces,
            "processor_id": self.processor_id,
            "timestamp": time.time()
        }

    async def load_model(self):
        # Your model loading logic
        return load_face_detection_model()

    async def detect_faces(self, image_data):
        # Your face detection logic
        return self.model.detect(image_data)


if __name__ == "__main__":
    processor = FaceRecognitionProcessor()

    # Handle graceful shutdown
    def signal_handler(signum, frame):
        processor.stop()

    signal.signal(signal.SIGINT, signal_handler)
    signal.signal(signal.SIGTERM, signal_handler)

    asyncio.run(processor.start())
