"""A queue's load (``middleware/load.py``) from ``XINFO GROUPS`` in each shape a reply takes:
parsed by redis-py (the overview), or raw as the broker's hot-path connections return it
(a RESP3 map with bytes keys, a RESP2 flat list)."""

from __future__ import annotations

import pytest
import redis

from middleware.load import backlog_and_in_flight, measure_load
from pipeline import FrameProducer, ProcessorRegistry

from .processor_harness import register_fake


@pytest.mark.parametrize(
    "group",
    [
        {"name": "workers", "consumers": 1, "pending": 2, "last-delivered-id": "1-0", "lag": 3},
        {b"name": b"workers", b"consumers": 1, b"pending": 2, b"last-delivered-id": b"1-0", b"lag": 3},
        [b"name", b"workers", b"consumers", 1, b"pending", 2, b"last-delivered-id", b"1-0", b"lag", 3],
    ],
)
def test_backlog_and_in_flight_read_every_shape_of_the_reply(group: object) -> None:
    assert backlog_and_in_flight(5, [group]) == (3, 2)


def test_without_lag_the_backlog_is_the_length_less_the_pending() -> None:  # Redis 6.2
    assert backlog_and_in_flight(7, [[b"name", b"workers", b"pending", 2]]) == (5, 2)
    assert backlog_and_in_flight(7, [[b"name", b"other", b"pending", 2]]) == (7, 0)  # never read by workers
    assert backlog_and_in_flight(7, redis.ResponseError("no such key")) == (7, 0)


def test_the_router_measures_lag_and_pending_per_unit_of_capacity(redis_url: str, redis_client: redis.Redis) -> None:
    register_fake(redis_client, "face-1", ("face_detection",), capacity=4)
    register_fake(redis_client, "face-2", ("face_detection",), capacity=1)
    for _ in range(6):
        redis_client.xadd("frames:ready:face-1", {"frame_id": "waiting"})
    redis_client.xgroup_create("frames:ready:face-1", "workers", id="0")
    redis_client.xreadgroup("workers", "worker-1", {"frames:ready:face-1": ">"}, count=2)  # two in flight
    producer = FrameProducer(redis_url)
    try:
        infos = ProcessorRegistry(redis_client).list()
        assert measure_load(producer.broker, infos) == {"face-1": 6 / 4, "face-2": 0.0}
    finally:
        producer.close()
