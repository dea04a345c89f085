"""HTTP cameras: an MJPEG stream (``multipart/x-mixed-replace``) or a JPEG snapshot URL.

One URL serves both kinds: the answer's content type says which. A stream's parts are read as they
come; a snapshot URL is asked again at the camera's fps. Credentials in the URL
(``http://user:password@host/...``) go out as Basic authentication, never in a message: every
message names the URL masked, and redirects are followed on the camera's own host only. The
socket's timeout is the stall timeout (for connecting too), so a camera that keeps the connection
open and sends nothing is detected like one that hangs up.
"""

from __future__ import annotations

import base64
import io
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from email.message import Message
from http.client import HTTPException, HTTPResponse
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from .captured import Captured
from .errors import CameraStalled, CameraUnavailable
from .masking import mask_camera_url

#: The largest part accepted from a stream (a JPEG of a 4K picture is a few MiB).
MAX_PART_BYTES = 32 * 1024 * 1024


def http_frames(url: str, *, fps: float, stall_timeout_s: float = 10.0) -> Iterator[Captured]:
    """JPEG frames from an MJPEG stream or a polled snapshot URL, until it ends or fails.

    Raises:
      CameraUnavailable: refused, an HTTP error, not a picture, or the stream broke.
      CameraStalled: no data for ``stall_timeout_s``.
    """
    masked = mask_camera_url(url)
    response = _get(url, masked, stall_timeout_s)
    kind = response.headers.get_content_type()
    try:
        if kind == "multipart/x-mixed-replace":
            yield from _stream_parts(_Reader(response, masked, stall_timeout_s))
        elif kind.startswith("image/"):
            yield _picture(_Reader(response, masked, stall_timeout_s).everything(), masked)
            response.close()
            period = 1 / fps
            while True:
                started = time.monotonic()
                with _get(url, masked, stall_timeout_s) as answer:
                    yield _picture(_Reader(answer, masked, stall_timeout_s).everything(), masked)
                time.sleep(max(0.0, started + period - time.monotonic()))  # polling at the camera's fps
        else:
            raise CameraUnavailable(f"{masked}: answered {kind}, not a JPEG or an MJPEG stream")
    finally:
        response.close()


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a camera's redirects on its own host only: the Basic credentials would go along to
    any other host. Elsewhere the answer stays the redirect, reported as an HTTP error."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> Any:
        if urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            return None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameHostRedirects)


def _get(url: str, masked: str, timeout_s: float) -> HTTPResponse:
    parts = urlsplit(url)
    headers = {"User-Agent": "frameflow"}
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    request = urllib.request.Request(urlunsplit(parts), headers=headers)
    try:
        return _OPENER.open(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        error.close()
        raise CameraUnavailable(f"{masked}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, TimeoutError):
            raise CameraUnavailable(f"{masked}: no answer within {timeout_s:g}s") from None
        raise CameraUnavailable(f"{masked}: {getattr(reason, 'strerror', None) or reason}") from None
    except (TimeoutError, OSError, HTTPException) as error:
        raise CameraUnavailable(f"{masked}: {_reason(error, timeout_s)}") from None


class _Reader:
    """Reads an answer, turning a timeout into :class:`CameraStalled` and a broken connection
    into :class:`CameraUnavailable`."""

    def __init__(self, response: HTTPResponse, masked: str, stall_timeout_s: float) -> None:
        self.response, self.masked, self.stall_timeout_s = response, masked, stall_timeout_s

    def line(self) -> bytes:
        line = self._call(self.response.readline, MAX_PART_BYTES)
        if not line:
            raise CameraUnavailable(f"{self.masked}: the stream ended")
        return line

    def exactly(self, size: int) -> bytes:
        body = self._call(self.response.read, size)
        if len(body) < size:
            raise CameraUnavailable(f"{self.masked}: the stream ended inside a picture")
        return body

    def everything(self) -> bytes:
        return self._call(self.response.read, MAX_PART_BYTES)

    def _call(self, read: Callable[[int], bytes], size: int) -> bytes:
        try:
            return read(size)
        except TimeoutError:
            raise CameraStalled(f"{self.masked}: no data for {self.stall_timeout_s:g}s (stalled)") from None
        except (OSError, HTTPException) as error:
            raise CameraUnavailable(f"{self.masked}: {_reason(error, None)}") from None


def _stream_parts(reader: _Reader) -> Iterator[Captured]:
    """Each part of a ``multipart/x-mixed-replace`` answer, by its ``Content-Length`` when it has one,
    else up to the next boundary line."""
    boundary = reader.response.headers.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise CameraUnavailable(f"{reader.masked}: an MJPEG stream without a boundary")
    delimiter = b"--" + boundary.removeprefix("--").encode()
    line = reader.line()
    while True:
        while not line.startswith(delimiter):  # preamble, or the blank line after a part
            line = reader.line()
        if line.rstrip().endswith(delimiter + b"--"):
            return  # the closing boundary: the stream ended
        headers = Message()
        while (line := reader.line()).strip():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip()] = value.strip()
        length = headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= MAX_PART_BYTES:
            body = reader.exactly(int(length))
            line = reader.line()
        else:
            chunks: list[bytes] = []
            while not (line := reader.line()).startswith(delimiter):
                chunks.append(line)
            body = b"".join(chunks).removesuffix(b"\r\n")
        yield _picture(body, reader.masked)


def _picture(data: bytes, masked: str) -> Captured:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height, kind = image.width, image.height, (image.format or "").lower()
    except (UnidentifiedImageError, OSError):
        raise CameraUnavailable(f"{masked}: sent {len(data)} bytes that are not a picture") from None
    if kind not in ("jpeg", "mpo"):
        raise CameraUnavailable(f"{masked}: sent a {kind or 'unknown'} picture, not a JPEG")
    return Captured(width, height, "mjpeg", jpeg=data)


def _reason(error: BaseException, timeout_s: float | None) -> str:
    if isinstance(error, TimeoutError) and timeout_s is not None:
        return f"no answer within {timeout_s:g}s"
    return str(getattr(error, "strerror", None) or error or type(error).__name__)
