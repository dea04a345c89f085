"""PyAV, imported only where a video is opened.

PyAV (FFmpeg's libraries, about 100 MB installed) is the ``video`` extra: the pipeline, the
synthetic camera and image sources run without it. A video source asked for without it gets
one line saying what to install, not an ``ImportError`` traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pipeline.errors import SourceError

#: What to install for video sources.
VIDEO_EXTRA_HINT = "pip install 'frameflow[video]'"


def load_av(what: str) -> ModuleType:
    """The ``av`` module, or :class:`SourceError` naming ``what`` needed it and the extra to install."""
    try:
        return importlib.import_module("av")
    except ImportError:
        raise SourceError(f"{what} needs PyAV, which is not installed: {VIDEO_EXTRA_HINT}") from None
