"""A camera's capture thread: connect, put every frame in the keep-latest slot, reconnect.

Whatever happens to the camera (it refuses, the stream ends, it stalls, the network drops), the
thread logs one line, marks the camera down and tries again after a capped exponential backoff; no
exception escapes it. When the camera answers again the gap without frames is logged and counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from pipeline.errors import SourceError

from .backoff import Backoff
from .captured import Captured
from .latest import LatestSlot
from .status import CameraStatus

logger = logging.getLogger(__name__)

#: Opens the camera and yields its frames until the connection ends (raising ``SourceError`` when it fails).
Connect = Callable[[], Iterator[Captured]]


class CaptureThread(threading.Thread):
    """Runs ``connect`` again and again until :meth:`stop`, feeding ``slot`` and ``status``.

    Parameters:
      connect: opens the camera; its iterator ends or raises when the connection does.
      slot: where each frame goes (the publisher takes the newest).
      status: the camera's counters and connection state.
      backoff: the delays between attempts (reset by each frame received).
    """

    def __init__(
        self, connect: Connect, slot: LatestSlot[Captured], status: CameraStatus, backoff: Backoff | None = None
    ) -> None:
        super().__init__(name=f"camera-{status.camera_id}", daemon=True)
        self.connect, self.slot, self.status = connect, slot, status
        self.backoff = backoff or Backoff()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            reason = self._read_until_it_ends()
            if self.stopping.is_set():
                break
            self.status.disconnected(reason)
            delay = self.backoff.next_delay()
            logger.warning("camera %s: %s; reconnecting in %.1fs", self.status.camera_id, reason, delay)
            self.stopping.wait(delay)

    def _read_until_it_ends(self) -> str:
        frames = self.connect()
        first = True
        try:
            for frame in frames:
                if first:
                    self._connected(frame)
                    first = False
                self.status.frame_in()
                self.slot.put(frame)
                if self.stopping.is_set():
                    return "stopped"
            return "the stream ended"
        except SourceError as error:
            return str(error)
        except Exception as error:  # a bug or a library's surprise: logged, the camera is retried
            logger.exception("camera %s: unexpected error", self.status.camera_id)
            return f"unexpected error: {type(error).__name__}: {error}"
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    def _connected(self, frame: Captured) -> None:
        self.backoff.reset()
        gap = self.status.connected_to(frame.codec, frame.width, frame.height)
        if gap is None:
            logger.info(
                "camera %s: connected to %s (%s %dx%d)",
                self.status.camera_id,
                self.status.url,
                frame.codec,
                frame.width,
                frame.height,
            )
        else:
            logger.warning(
                "camera %s: reconnected after %.1fs without frames (reconnect #%d)",
                self.status.camera_id,
                gap,
                self.status.reconnects,
            )

    def stop(self) -> None:
        self.stopping.set()
