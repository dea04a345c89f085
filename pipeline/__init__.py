"""frameflow: camera frames to AI processors on Dramatiq and Redis Streams, and their results onwards.

The public surface is re-exported here, as Dramatiq's is from ``dramatiq``::

    from pipeline import ProcessorClient, FrameProducer, RedisStreamsBroker

The package is in layers, each a folder, imports pointing down only
(``docs/architecture.md``; ``tests/test_layers.py`` enforces it):

* ``pipeline.streams`` — the broker core: a Dramatiq broker on Redis Streams that knows nothing of frames;
* ``pipeline.domain`` — frames, the processor registry, claim-checked images, results, keys;
* ``middleware`` (a package of its own) — the Dramatiq middleware: routing, tracing, metrics, freshness;
* ``pipeline.processes`` — ``ProcessorClient``, ``FrameProducer``, the scheduler, heartbeats;
* ``pipeline.cameras`` — frame sources (the edges);
* ``pipeline.tools`` — the ``frameflow`` CLI, demo, soak, model fetching.

The names below are imported on first use (PEP 562), so ``import pipeline.streams`` loads the broker
core alone, and ``import pipeline`` touches no Redis. ``import pipeline.broker`` sets the global Dramatiq
broker from the environment (``dramatiq pipeline.broker my_actors``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:  # for type checkers and IDEs; at run time :func:`__getattr__` imports on first use
    from .domain.frames import Frame, FrameRejected
    from .domain.registry import ProcessorInfo, ProcessorRegistry
    from .domain.results import ResultReader
    from .errors import (
        DeadLettered,
        EmbeddedRedisError,
        FrameflowError,
        InvalidQueueName,
        MalformedEntry,
        NotReplicated,
    )
    from .processes.processor import ProcessorClient
    from .processes.producer import FrameProducer
    from .settings import Settings
    from .streams.broker import RedisStreamsBroker
    from .streams.dead_letters import DeadLetter, DeadLetterQueue
    from .streams.embedded import EmbeddedRedis

#: Public name -> the module that defines it.
_EXPORTS = {
    "DeadLetter": "pipeline.streams.dead_letters",
    "DeadLetterQueue": "pipeline.streams.dead_letters",
    "DeadLettered": "pipeline.errors",
    "EmbeddedRedis": "pipeline.streams.embedded",
    "EmbeddedRedisError": "pipeline.errors",
    "Frame": "pipeline.domain.frames",
    "FrameProducer": "pipeline.processes.producer",
    "FrameRejected": "pipeline.domain.frames",
    "FrameflowError": "pipeline.errors",
    "InvalidQueueName": "pipeline.errors",
    "MalformedEntry": "pipeline.errors",
    "NotReplicated": "pipeline.errors",
    "ProcessorClient": "pipeline.processes.processor",
    "ProcessorInfo": "pipeline.domain.registry",
    "ProcessorRegistry": "pipeline.domain.registry",
    "RedisStreamsBroker": "pipeline.streams.broker",
    "ResultReader": "pipeline.domain.results",
    "Settings": "pipeline.settings",
}

__all__ = [
    "DeadLetter",
    "DeadLetterQueue",
    "DeadLettered",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "Frame",
    "FrameProducer",
    "FrameRejected",
    "FrameflowError",
    "InvalidQueueName",
    "MalformedEntry",
    "NotReplicated",
    "ProcessorClient",
    "ProcessorInfo",
    "ProcessorRegistry",
    "RedisStreamsBroker",
    "ResultReader",
    "Settings",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
