"""Camera previews: a producer keeps each camera's newest frame, at most once per interval, for a short while."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from pipeline import FrameProducer
from pipeline.domain.keys import preview_key
from pipeline.domain.previews import preview_versions, read_preview
from tests.polling import wait_until

IMAGE = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"  # kept as it is: no decoding, no re-encoding


@pytest.fixture
def producer(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FrameProducer]:
    monkeypatch.setenv("FRAMEFLOW_PREVIEW_INTERVAL_S", "1")
    made = FrameProducer(redis_url)
    yield made
    made.close()


def frame(camera_id: str, frame_id: str, **options: object) -> dict[str, object]:
    return dict(camera_id=camera_id, frame_id=frame_id, image=IMAGE, capabilities=["nobody-has-this"],
                width=64, height=48, **options)  # fmt: skip


def test_a_camera_preview_is_written_at_most_once_per_interval_and_expires(
    producer: FrameProducer, redis_client: redis.Redis
) -> None:
    now = [1000.0]
    producer.previews.clock = lambda: now[0]
    producer.previews.ttl_s = 3
    namespace = producer.broker.namespace

    def versions() -> dict[str, str]:  # of this test's cameras (other tests' producers keep theirs)
        return {camera: frame_id for camera, frame_id in preview_versions(redis_client, namespace).items()
                if camera in ("gate", "shed", "cellar")}  # fmt: skip

    producer.publish(**frame("gate", "gate-1"))
    now[0] += 0.5
    producer.publish(**frame("gate", "gate-2"))  # within the interval: the preview stays gate-1
    assert versions() == {"gate": "gate-1"}
    kept = read_preview(redis_client, namespace, "gate")
    assert kept is not None and kept.image == IMAGE and kept.media_type == "image/jpeg"

    now[0] += 0.5
    cellar = frame("cellar", "cellar-1", format="raw")  # no container a browser opens: no preview
    producer.publish_many([frame("gate", "gate-3"), frame("gate", "gate-4"), frame("shed", "shed-1"), cellar])
    assert versions() == {"gate": "gate-4", "shed": "shed-1"}  # the newest of each

    assert 0 < redis_client.pttl(preview_key(namespace, "gate")) <= 3000
    wait_until(lambda: versions() == {}, 10, "the previews never expired")
    assert not redis_client.exists(preview_key(namespace, "gate"), preview_key(namespace, "shed"))


def test_interval_zero_keeps_no_preview(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAMEFLOW_PREVIEW_INTERVAL_S", "0")
    producer = FrameProducer(redis_url)
    try:
        assert producer.previews.interval_s == 0
        producer.publish(**frame("attic", "attic-1"))
        assert not redis_client.exists(preview_key(producer.broker.namespace, "attic"))
    finally:
        producer.close()
