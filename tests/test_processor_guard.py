"""A processor's queue refuses what would make Dramatiq send messages on the processor's behalf,
and a processor counts every frame it refused before processing as ``rejected``.

A real processor on a real Redis, started the Dramatiq-CLI way (a :class:`dramatiq.Worker`
over every declared queue, its boot starting the processor), next to ``record_call``: an
actor that records each call, the target every hostile entry names. Entries are written
with XADD straight into the processor's queue, as anything with access to Redis could.
"""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import dramatiq
import pytest
import redis
from dramatiq import Message
from dramatiq.middleware import Callbacks, Pipelines, Retries
from prometheus_client import REGISTRY

from pipeline import ProcessorClient, ProcessorRegistry, RedisStreamsBroker
from pipeline.domain.images import decode_frame_image
from pipeline.streams.dead_letters import parse_dead_letter
from pipeline.streams.keys import QueueKeys, queue_keys
from tests.hostile import JPEG, dead_letters_of, frame_entry, result_frame_ids, valid_frame
from tests.polling import wait_until
from tests.processes import pending_count
from tests.processor_harness import running

CALLBACKS = "callbacks"
#: A frame the processor fails with an UnprocessableFrame (no retry): its image is not a JPEG.
BROKEN_IMAGE = base64.b64encode(JPEG[:20])


class GuardedProcessor(ProcessorClient):
    """Decodes each frame's image; a frame whose metadata says ``crash`` raises an ordinary error (retried)."""

    max_retries = 1

    def __init__(self, processor_id: str, results: str) -> None:
        super().__init__(
            processor_id=processor_id,
            capabilities=["guarded"],
            orchestrator_url="unused",
            capacity=4,
            result_stream=results,
            health_port=0,
            health_check_interval=0.2,
        )

    def process_frame(self, frame_data: dict[bytes, bytes]) -> dict:
        if json.loads(frame_data[b"metadata"]).get("crash"):
            raise RuntimeError("crashed on purpose")
        picture = decode_frame_image(frame_data)
        return {"size": f"{picture.width}x{picture.height}"}


@dataclass
class Guarded:
    processor: GuardedProcessor
    keys: QueueKeys
    results: str
    calls: list[tuple]
    record_call: dramatiq.Actor
    plain: dramatiq.Actor

    @property
    def processor_id(self) -> str:
        return self.processor.processor_id

    def entry(self, frame: dict[str, bytes], **options: object) -> dict[bytes, bytes]:
        """A frame entry for this processor, with extra envelope ``options``."""
        return frame_entry(frame, self.processor_id, options={"frame": True, "processor": self.processor_id, **options})

    def health(self) -> dict:
        assert self.processor._health is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.processor._health.port}/health", timeout=5) as response:
            return json.load(response)

    def metric(self, name: str) -> float | None:
        labels = {"processor": self.processor_id, "queue": self.processor.queue_name}
        return REGISTRY.get_sample_value(f"frameflow_frames_{name}_total", labels)


@pytest.fixture
def guarded(broker: RedisStreamsBroker, redis_client: redis.Redis) -> Iterator[Guarded]:
    processor_id = f"guarded-{uuid.uuid4().hex[:8]}"  # its own metric series: the registry is the process's
    processor = GuardedProcessor(processor_id, f"results:{processor_id}")
    processor.attach(broker)
    calls: list[tuple] = []

    @dramatiq.actor(broker=broker, queue_name=CALLBACKS, actor_name="record_call")
    def record_call(*args: object, **kwargs: object) -> None:
        calls.append((args, kwargs))

    @dramatiq.actor(broker=broker, actor_name="plain")
    def plain() -> None:
        """Not a processor: the options a processor queue refuses work here."""

    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()  # its boot starts the processor (ProcessorLifecycle), which registers
    try:
        registry = ProcessorRegistry(redis_client)
        wait_until(lambda: registry.get(processor_id) is not None, 15, "the processor to register")
        keys = queue_keys("frameflow", processor.queue_name)
        yield Guarded(processor, keys, f"results:{processor_id}", calls, record_call, plain)
    finally:
        worker.stop()


def crashing_frame() -> dict[str, bytes]:
    return {**valid_frame(), "metadata": b'{"crash": true}'}


def test_callback_and_pipeline_options_end_as_dead_letters_and_send_nothing(
    guarded: Guarded, redis_client: redis.Redis
) -> None:
    callback = Message(queue_name=CALLBACKS, actor_name="record_call", args=(), kwargs={}, options={}).asdict()
    # Each one would make Dramatiq send record_call a message if the queue accepted it.
    hostile = {
        "option 'on_success' is": guarded.entry(valid_frame(), on_success="record_call"),
        "option 'on_failure' is": guarded.entry(
            {**valid_frame(), "image_data": BROKEN_IMAGE}, on_failure="record_call"
        ),
        "option 'on_retry_exhausted' is": guarded.entry(crashing_frame(), retries=1, on_retry_exhausted="record_call"),
        "option 'pipe_target' is": guarded.entry(valid_frame(), pipe_target=callback),
        "option 'pipe_ignore' is": guarded.entry(valid_frame(), pipe_ignore=True),
        "options 'on_success', 'on_failure' are": guarded.entry(
            valid_frame(), on_success="record_call", on_failure="record_call"
        ),
    }
    ids = {redis_client.xadd(guarded.keys.stream, fields): named for named, fields in hostile.items()}
    options = {entry_id: json.loads(hostile[named][b"message"])["options"] for entry_id, named in ids.items()}
    reasons = wait_until(
        lambda: (found := dead_letters_of(redis_client, set(ids), guarded.keys)) and len(found) == len(ids) and found,
        15,
        lambda: f"a dead letter for every entry: {dead_letters_of(redis_client, set(ids), guarded.keys)}",
    )
    for entry_id, named in ids.items():
        assert reasons[entry_id] == f"ForbiddenOption: {named} not allowed on a processor queue"
    for _, fields in redis_client.xrange(guarded.keys.dead):  # the options kept as they came: the evidence
        assert json.loads(fields[b"message"])["options"] == options[fields[b"dead_entry_id"]]
    assert redis_client.zcard(guarded.keys.delayed) == 0  # no retry

    # The worker goes on: a valid frame is processed, and a plain actor's callback does run.
    frame_id = uuid.uuid4().hex
    redis_client.xadd(guarded.keys.stream, guarded.entry(valid_frame(frame_id)))
    guarded.plain.send_with_options(on_success="record_call")
    wait_until(lambda: frame_id in result_frame_ids(redis_client, guarded.results), 10, "the valid frame's result")
    wait_until(lambda: guarded.calls, 10, "the plain actor's callback")
    wait_until(lambda: pending_count(redis_client, "callbacks") == 0, 10, "the callbacks queue to drain")
    assert redis_client.xlen("callbacks") == 0
    assert len(guarded.calls) == 1, guarded.calls  # only the plain actor's: nothing on the processor's behalf
    assert guarded.calls[0][0][0]["actor_name"] == "plain"

    stats = guarded.processor.stats.snapshot()
    assert (stats["rejected"], stats["failed"], stats["processed"]) == (len(hostile), 0, 1)
    assert "not allowed on a processor queue" in stats["last_rejection"]
    assert (guarded.metric("rejected"), guarded.metric("failed"), guarded.metric("processed")) == (len(hostile), 0, 1)
    assert guarded.processor._breaker.state == "closed"


def test_frames_refused_by_the_intake_checks_are_counted_as_rejected(
    guarded: Guarded, redis_client: redis.Redis
) -> None:
    refused = [
        guarded.entry({name: value for name, value in valid_frame().items() if name != "width"}),
        guarded.entry({**valid_frame(), "camera_id": b"front door!"}),
        guarded.entry({**valid_frame(), "format": b"gif"}),
    ]
    broken = guarded.entry({**valid_frame(), "image_data": BROKEN_IMAGE})  # accepted, then fails to decode
    good_id = uuid.uuid4().hex
    for fields in [*refused, broken, guarded.entry(valid_frame(good_id))]:
        redis_client.xadd(guarded.keys.stream, fields)

    wait_until(
        lambda: (
            redis_client.xlen(guarded.keys.dead) == len(refused) + 1
            and good_id in result_frame_ids(redis_client, guarded.results)
        ),
        15,
        "every frame to end",
    )
    reasons = sorted(parse_dead_letter(i, f).reason for i, f in redis_client.xrange(guarded.keys.dead))
    assert [reason.split(":")[0] for reason in reasons] == ["FrameRefused"] * len(refused) + ["ImageDecodeError"]

    expected = {"rejected": len(refused), "failed": 1, "processed": 1}
    assert {name: guarded.processor.stats.snapshot()[name] for name in expected} == expected
    body = guarded.health()
    assert {name: body[name] for name in expected} == expected
    assert body["last_rejection"].startswith("FrameRefused: ")
    assert {name: guarded.metric(name) for name in expected} == expected
    key = ProcessorRegistry(redis_client).key(guarded.processor_id)
    wait_until(
        lambda: redis_client.hget(key, "rejected") == str(len(refused)).encode(), 5, "a heartbeat carrying the count"
    )


def test_a_processor_on_its_own_broker_carries_no_callbacks_or_pipelines_and_still_refuses_their_options(
    redis_client: redis.Redis,
) -> None:
    """``start()`` makes a broker that serves only the guarded queue: Dramatiq's Callbacks and Pipelines
    are left out (the guard refuses every option they act on first), Retries stays, and an entry
    naming ``on_success`` is still dead-lettered with the guard's reason."""
    processor_id = f"own-{uuid.uuid4().hex[:8]}"
    processor = GuardedProcessor(processor_id, f"results:{processor_id}")
    processor.redis_client = redis_client
    with running(processor, redis_client):
        assert processor.broker is not None
        kinds = {type(middleware) for middleware in processor.broker.middleware}
        assert Callbacks not in kinds and Pipelines not in kinds and Retries in kinds
        keys = queue_keys("frameflow", processor.queue_name)
        options = {"frame": True, "processor": processor_id, "on_success": "record_call"}
        entry_id = redis_client.xadd(keys.stream, frame_entry(valid_frame(), processor_id, options=options))
        reasons = wait_until(
            lambda: dead_letters_of(redis_client, {entry_id}, keys), 15, "the on_success entry's dead letter"
        )
    assert reasons[entry_id] == "ForbiddenOption: option 'on_success' is not allowed on a processor queue"
    assert processor.stats.snapshot()["rejected"] == 1
