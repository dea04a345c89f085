"""Prometheus metrics: a known workload, then exact counts from the real ``/metrics`` endpoints.

The worker (``tests/observed.py processor``) serves its own metrics on its health
port; ``frameflow scheduler --metrics-port`` serves the pipeline-wide ones from
Redis. Both are real processes, scraped over HTTP as Prometheus would.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import dramatiq
import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from middleware.metrics import Metrics, MetricsStore
from middleware.routing import CapabilityRouter
from pipeline import FrameProducer, ProcessorRegistry, RedisStreamsBroker
from pipeline.processes.build_info import BuildInfo
from pipeline.processes.health import HealthServer
from pipeline.processes.queue_metrics import PipelineCollector

from .observability import Processes, observed, observed_env
from .processes import ROOT, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

IMAGE = b"\xff\xd8" + bytes(range(256)) + b"\xff\xd9"


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    group = Processes(tmp_path)
    yield group
    group.stop_all()


@pytest.mark.slow
def test_a_known_workload_reads_back_exactly_from_the_metrics_endpoints(
    redis_url: str, redis_client: redis.Redis, processes
) -> None:
    env = observed_env(redis_url)
    scheduler = processes.start(
        "scheduler",
        [sys.executable, "-m", "pipeline.tools.cli", "scheduler", "--metrics-port", "0", "--interval", "60"],
        env,
    )
    worker = processes.start("worker", observed("processor", "metered-1", "metered", "--max-retries", "1"), env)
    registry = ProcessorRegistry(redis_client)
    info = wait_until(lambda: registry.get("metered-1"), 30, lambda: f"the worker to register:\n{worker.log_tail()}")
    assert info.health_endpoint is not None
    worker_metrics = info.health_endpoint.replace("/health", "/metrics")
    found = wait_until(
        lambda: re.search(r"metrics at (http://\S+/metrics)", scheduler.log_path.read_text()),
        30,
        lambda: f"the scheduler's metrics address:\n{scheduler.log_tail()}",
    )
    pipeline_metrics = found.group(1)

    # The workload: N frames to the worker, of which K fail every attempt (R retries each) and D
    # are stale on arrival; S succeed. One more frame needs a capability nobody serves: parked.
    N, K, D, R = 12, 2, 3, 1
    S = N - K - D
    producer = FrameProducer(redis_url)
    frame_ids = []
    for number in range(N):
        fail, stale = number < K, K <= number < K + D
        decision = producer.publish(
            camera_id=f"cam-{number % 3}",
            image=IMAGE,
            capabilities=["metered"],
            width=32,
            height=32,
            metadata={"fail": fail},
            timestamp=time.time() - (60 if stale else 0),
            max_age_ms=1000 if stale else 30_000,
        )
        assert decision.targets == ("metered-1",)
        frame_ids.append(decision.frame_id)
    parked = producer.publish(camera_id="cam-0", image=IMAGE, capabilities=["nobody"], width=32, height=32)
    assert parked.parked == ("nobody",)
    producer.close()

    labels = {"processor": "metered-1", "queue": "frames.ready.metered-1"}

    def settled() -> tuple[Samples, Samples] | None:
        at_worker, at_scheduler = scrape(worker_metrics), scrape(pipeline_metrics)
        done = (
            value(at_worker, "frameflow_frames_processed_total", **labels) == S
            and value(at_worker, "frameflow_frames_dead_lettered_total", **labels) == K
            and value(at_worker, "frameflow_frames_in_flight", **labels) == 0
            and all(
                value(at_scheduler, f"frameflow_queue_{gauge}", **labels) == 0
                for gauge in ("backlog", "pending", "delayed")
            )
        )
        return (at_worker, at_scheduler) if done else None

    at_worker, at_scheduler = wait_until(settled, 30, "the workload to finish")

    # The worker: what it did with each delivery.
    assert value(at_worker, "frameflow_frames_processed_total", **labels) == S
    assert value(at_worker, "frameflow_frames_failed_total", **labels) == K * (R + 1)
    assert value(at_worker, "frameflow_frames_retried_total", **labels) == K * R
    assert value(at_worker, "frameflow_frames_dead_lettered_total", **labels) == K
    # Latency histograms: queue wait per delivery (stale ones included), processing per
    # delivery that ran, end to end per frame that succeeded.
    assert value(at_worker, "frameflow_queue_wait_seconds_count", **labels) == N + K * R
    assert value(at_worker, "frameflow_processing_seconds_count", **labels) == N - D + K * R
    assert value(at_worker, "frameflow_end_to_end_seconds_count", **labels) == S
    assert value(at_worker, "frameflow_end_to_end_seconds_bucket", **labels, le="+Inf") == S

    # The scheduler: what Redis knows, pipeline-wide.
    assert value(at_scheduler, "frameflow_redis_up") == 1
    assert value(at_scheduler, "frameflow_frames_routed_total", **labels) == N
    assert value(at_scheduler, "frameflow_frames_dropped_total", **labels, reason="stale") == D
    assert value(at_scheduler, "frameflow_frames_dropped_total", processor="", queue="parked", reason="unroutable") == 0
    assert value(at_scheduler, "frameflow_queue_dead_letters", **labels) == K
    assert value(at_scheduler, "frameflow_frames_parked_total", capability="nobody") == 1
    assert value(at_scheduler, "frameflow_parked_frames", capability="nobody") == 1
    assert value(at_scheduler, "frameflow_processor_up", processor="metered-1") == 1
    assert value(at_scheduler, "frameflow_processor_breaker_open", processor="metered-1") == 0
    assert value(at_scheduler, "frameflow_processor_capacity", processor="metered-1") == 4
    assert 0 <= value(at_scheduler, "frameflow_processor_heartbeat_age_seconds", processor="metered-1") < 5

    # One scrape config finds the workers: the scheduler lists them for Prometheus's http_sd_configs.
    with urllib.request.urlopen(pipeline_metrics.replace("/metrics", "/targets"), timeout=5) as response:
        targets = json.load(response)
    labels = {"processor": "metered-1", "pid": str(info.pid)}
    assert targets == [{"targets": [urlsplit(worker_metrics).netloc], "labels": labels}]

    # Bounded label cardinality: no frame (or camera) ever becomes a label value.
    label_values = {label for (_, series) in {**at_worker, **at_scheduler} for _, label in series}
    assert not label_values & {*frame_ids, parked.frame_id, "cam-0", "cam-1", "cam-2"}


def test_plain_actor_deliveries_are_counted_and_timed(broker: RedisStreamsBroker) -> None:
    registry = CollectorRegistry()
    broker.add_middleware(Metrics(registry=registry), before=type(broker.middleware[0]))
    attempts: list[int] = []

    @dramatiq.actor(max_retries=1, min_backoff=10, max_backoff=20)
    def flaky(fail: bool) -> None:
        attempts.append(1)
        if fail:
            raise ValueError("no")

    flaky.send(False)
    flaky.send(True)
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        broker.join(flaky.queue_name, fail_fast=False)
        worker.join()
    finally:
        worker.stop()
    labels = {"processor": "", "queue": "default"}

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert len(attempts) == 3
    assert sample("frameflow_frames_processed_total") == 1
    assert sample("frameflow_frames_failed_total") == 2
    assert sample("frameflow_frames_retried_total") == 1
    assert sample("frameflow_frames_dead_lettered_total") == 1
    assert sample("frameflow_queue_wait_seconds_count") == 3
    assert sample("frameflow_processing_seconds_count") == 3
    assert sample("frameflow_end_to_end_seconds_count") == 0  # not frames: no capture time
    assert sample("frameflow_frames_in_flight") == 0


def test_parked_frames_nobody_came_for_are_dropped_as_unroutable(redis_url: str, redis_client: redis.Redis) -> None:
    producer = FrameProducer(redis_url)
    producer.publish(
        camera_id="cam-1", image=IMAGE, capabilities=["ghost"], width=8, height=8, timestamp=time.time() - 60
    )
    router = CapabilityRouter()
    broker = RedisStreamsBroker(redis_url, middleware=[router])
    assert router.release_parked(broker, ["ghost"]) == (0, 1)
    registry = CollectorRegistry()
    registry.register(PipelineCollector(redis_client))
    unroutable = {"processor": "", "queue": "parked", "reason": "unroutable"}
    assert registry.get_sample_value("frameflow_frames_dropped_total", unroutable) == 1
    assert registry.get_sample_value("frameflow_frames_parked_total", {"capability": "ghost"}) == 1
    assert registry.get_sample_value("frameflow_parked_frames", {"capability": "ghost"}) == 0
    broker.close()
    producer.close()


def test_the_scheduler_says_so_when_redis_cannot_be_read() -> None:
    registry = CollectorRegistry()
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    registry.register(PipelineCollector(unreachable))
    assert registry.get_sample_value("frameflow_redis_up") == 0


def test_the_health_port_serves_metrics_too() -> None:
    server = HealthServer(lambda: (True, {"status": "healthy"}), 0).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            assert b"python_info" in response.read()  # prometheus-client's global registry
        request = urllib.request.Request(f"{base}/metrics", headers={"Accept": "application/openmetrics-text"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/other", timeout=5)
        assert missing.value.code == 404
    finally:
        server.stop()


def test_the_readme_and_the_dashboard_name_exactly_the_metrics_there_are(redis_client: redis.Redis) -> None:
    families = [*MetricsStore().describe(), *PipelineCollector(redis_client).collect(), *BuildInfo().collect()]
    named = {family.name + ("_total" if family.type == "counter" else "") for family in families}
    histograms = {family.name for family in families if family.type == "histogram"}
    series = named | {f"{name}_{suffix}" for name in histograms for suffix in ("bucket", "sum", "count")}

    readme = set(re.findall(r"`(frameflow_[a-z_]+)`", (ROOT / "README.md").read_text()))
    dashboard = set(re.findall(r"frameflow_[a-z_]+", (ROOT / "compose/grafana/frameflow-dashboard.json").read_text()))
    assert readme == named
    assert dashboard <= series, dashboard - series
