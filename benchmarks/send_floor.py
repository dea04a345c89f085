"""How close a single send can get to 3x stock Dramatiq here: ``python -m benchmarks.send_floor``.

A send returns once Redis has the message, so no broker's send is cheaper than one round trip. This
measures, in one process with the cases alternated in blocks of ``--messages`` (so that each round
shares the machine's state of that moment, the CPU the kernel put the process on included):

* *stock*: Dramatiq's ``RedisBroker``, ``actor.send()`` of a no-op actor;
* *frameflow*: :class:`~pipeline.RedisStreamsBroker`, the same;
* *floor*: Dramatiq's own message creation (``actor.message()``, which both brokers pay) plus one bare
  redis-py ``XADD`` of 200 bytes per round trip on a bare connection (no pool, retry or broker).

and prints µs per send and, round by round, stock/frameflow and stock/floor: the second is the most any
send that waits for Redis could reach against stock in that round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from benchmarks.server import BenchRedis
from pipeline import RedisStreamsBroker

QUEUE = "bench"
RAW_STREAM = "bench:raw"


def _noop(broker: dramatiq.Broker, name: str) -> dramatiq.Actor:
    def noop() -> None:
        pass

    return dramatiq.actor(noop, broker=broker, queue_name=QUEUE, max_retries=0, actor_name=name)


def measure(url: str, messages: int, rounds: int) -> dict[str, list[float]]:
    """µs per send of each case, one figure per round."""
    stock, frameflow = RedisBroker(url=url), RedisStreamsBroker(url)
    stock_noop, frameflow_noop = _noop(stock, "stock_noop"), _noop(frameflow, "frameflow_noop")
    stock_noop.send()
    frameflow_noop.send()  # warm-up: connections, scripts
    client = redis.Redis.from_url(url)
    connection = client.connection_pool.get_connection()
    packed = connection.pack_command("XADD", RAW_STREAM, "*", "payload", os.urandom(200))

    def floor() -> None:
        frameflow_noop.message()
        connection.send_packed_command(packed, check_health=False)
        connection.read_response()

    cases: dict[str, Callable[[], object]] = {
        "stock": stock_noop.send,
        "frameflow": frameflow_noop.send,
        "floor": floor,
    }
    figures: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for _ in range(rounds):
            for name, send in cases.items():
                started = time.perf_counter()
                for _ in range(messages):
                    send()
                figures[name].append((time.perf_counter() - started) / messages * 1e6)
            stock.flush_all()
            frameflow.flush(QUEUE)
            client.delete(RAW_STREAM)
    finally:
        client.connection_pool.release(connection)
        client.close()
        stock.close()
        frameflow.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="sends per case per round (default 1000)")
    parser.add_argument("--rounds", type=int, default=10, help="alternated rounds (default 10)")
    args = parser.parse_args()
    server = BenchRedis.start()
    try:
        figures = measure(server.url, args.messages, args.rounds)
    finally:
        server.stop()
    for name, values in figures.items():
        print(f"{name:10s} µs per send: median {statistics.median(values):6.1f}, min {min(values):6.1f}")
    for name in ("frameflow", "floor"):
        ratios = [stock / other for stock, other in zip(figures["stock"], figures[name], strict=True)]
        shown = ", ".join(f"{ratio:.2f}" for ratio in ratios)
        print(f"stock / {name}, round by round: {shown} (median {statistics.median(ratios):.2f}x)")


if __name__ == "__main__":
    main()
