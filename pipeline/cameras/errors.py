"""The camera edge's errors: each a :class:`~pipeline.errors.FrameflowError`, so the CLI prints one line."""

from __future__ import annotations

from pipeline.errors import FrameflowError, SourceError


class CameraConfigError(FrameflowError, ValueError):
    """The cameras file is malformed; the message names the file, the camera and the field."""


class CameraUnavailable(SourceError):
    """A camera refused, dropped or never answered; the capture thread reconnects after a backoff.
    The message names the camera's URL with its password masked."""


class CameraStalled(CameraUnavailable):
    """A camera's connection is open but no frame came within the stall timeout."""
