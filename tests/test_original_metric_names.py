"""The original's observability contract (issue 18, part 3): Prometheus recording rules in compose/
publish detektr's metric names from series frameflow really serves, so a dashboard keeps working."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
import redis
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from pipeline import FrameProducer
from pipeline.processes.queue_metrics import PipelineCollector

from .processor_harness import RecordingProcessor, publish, running, wait_for

COMPOSE = Path(__file__).resolve().parent.parent / "compose"
ORIGINAL_NAMES = {
    "processor_frames_processed_total",
    "processor_frame_duration_seconds_bucket",
    "processor_frame_duration_seconds_sum",
    "processor_frame_duration_seconds_count",
    "processor_active_tasks",
    "processor_errors_total",
    "frame_buffer_frames_distributed_total",
}


def recording_rules() -> dict[str, str]:
    prometheus = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    [rules_file] = prometheus["rule_files"]
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["prometheus"]["volumes"])
    assert mounts[f"./{rules_file}"] == f"/etc/prometheus/{rules_file}", "Prometheus must see the rules file"
    groups = yaml.safe_load((COMPOSE / rules_file).read_text())["groups"]
    return {rule["record"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_the_rules_record_every_original_name_and_nothing_else() -> None:
    assert set(recording_rules()) == ORIGINAL_NAMES


def test_every_series_the_rules_read_is_served_by_frameflow(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRAMEFLOW_HEALTH_HOST", raising=False)
    producer = FrameProducer(redis_url)
    processor = RecordingProcessor("metered-1", ["face_detection"], redis_url, health_port=0)
    try:
        with running(processor, redis_client):
            publish(producer, ["face_detection"])
            wait_for(lambda: processor.stats.processed == 1, what="one frame to be processed")
            assert processor._health is not None
            with urllib.request.urlopen(f"http://127.0.0.1:{processor._health.port}/metrics", timeout=5) as response:
                processor_metrics = response.read().decode()
            pipeline_registry = CollectorRegistry()  # the scheduler's /metrics, while the processor is live
            pipeline_registry.register(PipelineCollector(redis_client))
            pipeline_metrics = generate_latest(pipeline_registry).decode()
    finally:
        producer.close()
    served = {
        line.split("{")[0].split(" ")[0]
        for line in (processor_metrics + pipeline_metrics).splitlines()
        if line and not line.startswith("#")
    }
    for name, expression in recording_rules().items():
        sources = set(re.findall(r"\bframeflow_[a-z_]+", expression))
        assert sources, name
        assert sources <= served, f"{name} reads {sorted(sources - served)}, which frameflow does not serve"
    assert 'processor="metered-1"' in processor_metrics
