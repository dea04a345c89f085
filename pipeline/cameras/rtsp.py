"""RTSP cameras (H.264, H.265, anything FFmpeg decodes), read with PyAV.

TCP transport by default: over real networks UDP loses packets and with them whole pictures; UDP
stays selectable for cameras that only speak it. Opening has its own timeout; once open, a read that
waits longer than the stall timeout ends the connection (:class:`CameraStalled`) so the capture
thread reconnects. FFmpeg's messages name the URL with its password: only their reason is kept,
and the URL is always shown masked.

With ``keyframes_only`` the decoder skips every picture but the key frames (``skip_frame=NONKEY``):
for an fps cap at or below the camera's key-frame rate this decodes only what will be sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .captured import Captured
from .errors import CameraStalled, CameraUnavailable
from .masking import mask_camera_url
from .pyav import load_av

#: Why packets were not decoded at all (``keyframes_only``).
NOT_KEYFRAME = "not_keyframe"
#: Why a packet's picture was lost: the decoder refused it.
CORRUPT = "corrupt"


def rtsp_frames(
    url: str,
    *,
    transport: str = "tcp",
    open_timeout_s: float = 10.0,
    stall_timeout_s: float = 10.0,
    keyframes_only: bool = False,
    on_skipped: Any = lambda reason, count=1: None,
) -> Iterator[Captured]:
    """The decoded pictures of the camera's first video stream until it ends, stalls or fails.

    Raises:
      CameraUnavailable: it cannot be opened, has no video, or failed mid-stream.
      CameraStalled: no packet came for ``stall_timeout_s``.
    """
    masked = mask_camera_url(url)
    av = load_av(f"the camera {masked}")
    # FFmpeg checks its interrupt callback twice before it gives up on a read, so half the stall
    # timeout here reports a stall within the timeout itself.
    timeouts = (open_timeout_s, stall_timeout_s / 2)
    try:
        container = av.open(url, options={"rtsp_transport": transport}, timeout=timeouts)
    except av.ExitError:
        raise CameraUnavailable(f"{masked}: no answer within {open_timeout_s:g}s") from None
    except (av.FFmpegError, OSError) as error:
        raise CameraUnavailable(f"{masked}: {_reason(error)}") from None
    try:
        if not container.streams.video:
            raise CameraUnavailable(f"{masked}: the stream has no video")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        for packet in container.demux(stream):
            if keyframes_only and not packet.is_keyframe:
                if packet.size:
                    on_skipped(NOT_KEYFRAME)
                continue
            try:
                pictures = packet.decode()
            except av.InvalidDataError:
                on_skipped(CORRUPT)
                continue
            for picture in pictures:
                yield Captured(picture.width, picture.height, codec, video_frame=picture)
    except av.ExitError:
        raise CameraStalled(f"{masked}: no frame for {stall_timeout_s:g}s (stalled)") from None
    except (av.FFmpegError, OSError) as error:
        raise CameraUnavailable(f"{masked}: {_reason(error)}") from None
    finally:
        container.close()


def _reason(error: BaseException) -> str:
    """FFmpeg's and the OS's own words without the URL (which carries the password)."""
    return str(getattr(error, "strerror", None) or type(error).__name__)
