"""Where the MQTT bridge sits: an edge that nothing imports but the CLI's registration line, the only
place paho-mqtt is imported, and an opt-in on the processor side that costs nothing when off."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from pipeline import FrameProducer
from pipeline.domain.keys import snapshot_key
from tests.mqtt_harness import FACES, FakeFaces, jpeg
from tests.processes import ROOT
from tests.processor_harness import running, wait_for


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's package
                package = path.relative_to(ROOT).with_suffix("").parts[: -node.level]
                base = ".".join([*package, *([base] if base else [])])
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


#: The bridge's pure modules (no paho, no bridge) the dashboard reads detections and draws pictures with.
SHARED_WITH_THE_DASHBOARD = {"pipeline.mqtt.errors", "pipeline.mqtt.mapping", "pipeline.mqtt.snapshots"}


def test_only_the_cli_imports_the_bridge_and_only_the_bridge_imports_paho() -> None:
    sources = [path for package in ("pipeline", "middleware", "workers") for path in (ROOT / package).rglob("*.py")]
    importers, paho = set(), set()
    for path in sources:
        inside = path.is_relative_to(ROOT / "pipeline" / "mqtt")
        names = _imports(path)
        if path.is_relative_to(ROOT / "pipeline" / "dashboard"):
            names = [name for name in names if not {name, name.rsplit(".", 1)[0]} & SHARED_WITH_THE_DASHBOARD]
        if not inside and any(name == "pipeline.mqtt" or name.startswith("pipeline.mqtt.") for name in names):
            importers.add(str(path.relative_to(ROOT)))
        if not inside and any(name.split(".")[0] == "paho" for name in names):
            paho.add(str(path.relative_to(ROOT)))
    assert importers == {"pipeline/tools/cli/main.py"} and paho == set()


def test_the_cli_starts_without_paho() -> None:
    """Without the mqtt extra every other command works, and `frameflow mqtt` says what to install."""
    blocker = "import sys; sys.modules['paho'] = None; sys.modules['paho.mqtt'] = None\n"
    code = blocker + "from pipeline.tools.cli.main import main; main(['mqtt'])"
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 1
    assert completed.stderr.strip() == "Error: frameflow mqtt needs paho-mqtt: pip install 'frameflow[mqtt]'"


def test_without_a_snapshot_ttl_processors_keep_no_image(redis_url, redis_client, monkeypatch) -> None:
    monkeypatch.delenv("FRAMEFLOW_SNAPSHOT_TTL_S", raising=False)
    processor = FakeFaces(
        processor_id="faces-nokeep-1",
        capabilities=["face_detection"],
        orchestrator_url="",
        redis_url=redis_url,
        result_stream=FACES,
        health_check_interval=0.5,
    )
    with running(processor, redis_client):
        producer = FrameProducer(redis_url)
        decision = producer.publish(
            camera_id="door",
            image=jpeg(32, 24),
            capabilities=["face_detection"],
            width=32,
            height=24,
            metadata={"faces": [[0.9, [1, 2, 3, 4]]]},
        )
        producer.close()
        [(_, fields)] = wait_for(lambda: redis_client.xrange(FACES), what="the result")
    assert b"snapshot_ref" not in fields and fields[b"faces_detected"] == b"1"
    assert not redis_client.exists(snapshot_key("frameflow", decision.frame_id))
