"""frameflow's core library: the Redis Streams broker for Dramatiq and what rides on it.

``import pipeline`` touches no Redis; ``import pipeline.broker`` sets the global
Dramatiq broker from the environment (``dramatiq pipeline.broker my_actors``).
"""

from .dead_letters import DeadLetter, DeadLetterQueue
from .embedded import EmbeddedRedis
from .errors import DeadLettered, EmbeddedRedisError, FrameflowError, InvalidQueueName, MalformedEntry
from .frames import Frame, FrameRejected
from .processor import ProcessorClient
from .producer import FrameProducer
from .redis_streams import RedisStreamsBroker
from .registry import ProcessorInfo, ProcessorRegistry
from .results import ResultReader
from .settings import Settings

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
    "ProcessorClient",
    "ProcessorInfo",
    "ProcessorRegistry",
    "RedisStreamsBroker",
    "ResultReader",
    "Settings",
]

__version__ = "0.1.0"
