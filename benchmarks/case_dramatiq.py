"""Dramatiq brokers with a no-op actor: ``send`` rate, then a worker's completion rate.

The same actor and worker shape for every broker (one process, ``threads`` worker
threads, Dramatiq's default middleware): messages are sent first (timed: the send
rate), then a :class:`dramatiq.Worker` starts and the clock runs until the actor ran
for every message *and* the broker shows the queue drained (acknowledgements landed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from benchmarks.timing import Countdown, Phase, wait_drained

QUEUE = "bench"


def stock_broker(url: str) -> tuple[dramatiq.Broker, Callable[[], bool]]:
    broker = RedisBroker(url=url)
    return broker, lambda: broker.do_qsize(QUEUE) == 0


def stub_broker(url: str) -> tuple[dramatiq.Broker, Callable[[], bool]]:
    broker = StubBroker()
    return broker, lambda: broker.queues[QUEUE].unfinished_tasks == 0


def frameflow_broker(url: str) -> tuple[dramatiq.Broker, Callable[[], bool]]:
    from pipeline import RedisStreamsBroker

    broker = RedisStreamsBroker(url)
    stream = broker.keys_for(QUEUE).stream
    return broker, lambda: broker.client.xlen(stream) == 0


BROKERS: dict[str, Callable[[str], tuple[dramatiq.Broker, Callable[[], bool]]]] = {
    "stock": stock_broker,
    "stub": stub_broker,
    "frameflow": frameflow_broker,
}


def run(url: str, params: dict[str, Any]) -> dict[str, float]:
    messages, threads = int(params["messages"]), int(params["threads"])
    broker, drained = BROKERS[params["broker"]](url)
    dramatiq.set_broker(broker)
    countdown = Countdown(messages)

    @dramatiq.actor(broker=broker, queue_name=QUEUE, max_retries=0)
    def noop() -> None:
        countdown.tick()

    broker.emit_after("process_boot")
    noop.send()  # warm-up: connections, scripts
    broker.flush(QUEUE)

    monitor = redis.Redis.from_url(url) if params["broker"] != "stub" else None
    with Phase(monitor) as sending:
        for _ in range(messages):
            noop.send()

    worker = dramatiq.Worker(broker, worker_threads=threads)
    with Phase(monitor) as completing:
        worker.start()
        countdown.wait(timeout_s=600)
        wait_drained(drained)
    worker.stop()
    broker.close()
    return {**sending.figures("send", messages), **completing.figures("complete", messages)}
