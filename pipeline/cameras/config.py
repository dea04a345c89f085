"""The cameras file: every camera declared once, in YAML, checked before anything starts.

```yaml
defaults:            # optional: any camera field, for every camera
  fps: 5
  capabilities: [sample]
cameras:
  - id: front-door
    url: rtsp://viewer:secret@192.168.1.20:554/stream1
    width: 640       # resize (the other side keeps the proportions when only one is given)
    max_age: 2       # seconds a frame stays worth processing
  - id: garage
    url: http://192.168.1.21/mjpeg   # MJPEG stream or JPEG snapshot URL
    enabled: false
```

A mistake is one line naming the file, the camera and the field. PyYAML is imported here only,
when a file is read.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pipeline.config_files import read_yaml_file

from .errors import CameraConfigError
from .masking import mask_camera_url

#: A camera id as frames carry it (the frame domain's rule).
CAMERA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

#: The URL of the generated test camera.
SYNTHETIC = "synthetic"

#: The URL schemes cameras are read from.
SCHEMES = ("rtsp", "rtsps", "http", "https")


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    """One camera of the cameras file (the field names are the file's)."""

    id: str
    url: str
    capabilities: tuple[str, ...]
    fps: float = 5.0
    width: int | None = None
    height: int | None = None
    quality: int = 85
    max_age: float = 5.0
    enabled: bool = True
    transport: str = "tcp"
    open_timeout: float = 10.0
    stall_timeout: float = 10.0
    keyframes_only: bool = False

    @property
    def kind(self) -> str:
        """``synthetic``, ``rtsp`` or ``http``."""
        scheme = urlsplit(self.url).scheme
        return SYNTHETIC if self.url == SYNTHETIC else scheme.removesuffix("s")

    @property
    def masked_url(self) -> str:
        return mask_camera_url(self.url)


FIELDS = {field.name for field in dataclasses.fields(CameraConfig)}


def load_cameras(path: str) -> list[CameraConfig]:
    """Every camera of the file, enabled or not, in the file's order.

    Raises:
      CameraConfigError: the file cannot be read, is not YAML, or a camera is wrong (one line saying which field).
    """
    data = read_yaml_file(path, "cameras file", CameraConfigError)
    try:
        return cameras_from_dict(data)
    except CameraConfigError as error:
        raise CameraConfigError(f"cameras file {path}: {error}") from None


def cameras_from_dict(data: Any) -> list[CameraConfig]:
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list) or not data["cameras"]:
        raise CameraConfigError("needs 'cameras': a list of cameras, each with an id, a url and capabilities")
    unknown = set(data) - {"cameras", "defaults"}
    if unknown:
        raise CameraConfigError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))} (known: cameras, defaults)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise CameraConfigError("'defaults' must be a map of camera fields")
    cameras, seen = [], set()
    for index, entry in enumerate(data["cameras"]):
        if not isinstance(entry, dict):
            raise CameraConfigError(f"camera #{index + 1}: must be a map with an id, a url and capabilities")
        name = entry.get("id") if isinstance(entry.get("id"), str) else f"#{index + 1}"
        try:
            camera = camera_from_dict({**defaults, **entry})
        except CameraConfigError as error:
            raise CameraConfigError(f"camera {name}: {error}") from None
        if camera.id in seen:
            raise CameraConfigError(f"camera {camera.id}: field 'id': declared twice")
        seen.add(camera.id)
        cameras.append(camera)
    return cameras


def camera_from_dict(entry: Mapping[str, Any]) -> CameraConfig:
    unknown = set(entry) - FIELDS
    if unknown:
        raise CameraConfigError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    for required in ("id", "url", "capabilities"):
        if entry.get(required) in (None, "", []):
            raise CameraConfigError(f"field {required!r}: missing")
    values = dict(entry)
    values["id"] = _checked("id", entry["id"], _camera_id)
    values["url"] = _checked("url", entry["url"], _url)
    values["capabilities"] = _checked("capabilities", entry["capabilities"], _capabilities)
    for name, low, high in (
        ("fps", 0, 1000),
        ("max_age", 0, 86400),
        ("open_timeout", 0, 600),
        ("stall_timeout", 0, 600),
    ):
        if name in entry:
            values[name] = _checked(name, entry[name], lambda value, low=low, high=high: _number(value, low, high))
    for name, low, high in (("width", 16, 8192), ("height", 16, 8192), ("quality", 1, 95)):
        if entry.get(name) is not None:
            values[name] = _checked(name, entry[name], lambda value, low=low, high=high: _integer(value, low, high))
    for name in ("enabled", "keyframes_only"):
        if name in entry and not isinstance(entry[name], bool):
            raise CameraConfigError(f"field {name!r}: {entry[name]!r} is not true or false")
    if "transport" in entry and entry["transport"] not in ("tcp", "udp"):
        raise CameraConfigError(f"field 'transport': {entry['transport']!r} is not tcp or udp")
    return CameraConfig(**values)


def _checked(name: str, value: Any, check: Any) -> Any:
    try:
        return check(value)
    except ValueError as error:
        raise CameraConfigError(f"field {name!r}: {error}") from None


def _camera_id(value: Any) -> str:
    if not isinstance(value, str) or not CAMERA_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not 1-128 letters, digits, '.', '_', ':' or '-'")
    return value


def _url(value: Any) -> str:
    if value == SYNTHETIC:
        return value
    if not isinstance(value, str) or urlsplit(value).scheme not in SCHEMES or not urlsplit(value).hostname:
        shown = mask_camera_url(value) if isinstance(value, str) else repr(value)
        raise ValueError(f"{shown} is not 'synthetic' or an rtsp://, rtsps://, http:// or https:// URL with a host")
    return value


def _capabilities(value: Any) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"{value!r} is not a list of capability names")
    return tuple(names)


def _number(value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a number")
    if not low < value <= high:
        raise ValueError(f"{value:g} is not above {low:g} and at most {high:g}")
    return float(value)


def _integer(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number")
    if not low <= value <= high:
        raise ValueError(f"{value} is not from {low} to {high}")
    return value
