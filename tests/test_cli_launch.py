"""Launching frameflow: ``frameflow worker``/``scheduler`` as processes, the Procfile under honcho,
and the docker-compose deployment (which cannot run here: its files are parsed and its commands checked)."""

from __future__ import annotations

import configparser
import contextlib
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import click
import pytest
import redis
import yaml
from dramatiq.cli import make_argument_parser
from honcho.environ import parse as parse_env_file
from honcho.environ import parse_procfile

from pipeline import EmbeddedRedis, FrameProducer, ProcessorRegistry
from pipeline.errors import ProcessorLoadError
from pipeline.settings import Settings
from pipeline.streams.embedded import free_port
from pipeline.tools.cli.main import load_processor, main
from tests.cli_harness import COLUMNS, FRAMEFLOW, ROOT
from tests.processes import wait_until
from tests.processor_harness import IMAGE, wait_for

COMPOSE = ROOT / "compose"

#: Packages the image copies (compose/Dockerfile): a module a service names must be in one of them.
IMAGE_PACKAGES = {"pipeline", "middleware", "workers"}


# -- frameflow worker, scheduler, --wait-for-redis -------------------------------------------
def test_worker_runs_a_processor_module_until_sigterm(redis_url, redis_client) -> None:
    registry = ProcessorRegistry(redis_client)
    process = subprocess.Popen(
        [*FRAMEFLOW, "--redis-url", redis_url, "worker", "workers.sample"],
        env={**os.environ, "COLUMNS": str(COLUMNS), "PROCESSOR_ID": "cli-sample-1", "HEALTH_CHECK_INTERVAL": "0.5"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        info = wait_for(lambda: registry.get("cli-sample-1"), timeout=30, what="the worker to register")
        assert (info.pid, info.capabilities, info.result_stream) == (process.pid, ("sample",), "samples:processed")
        producer = FrameProducer(redis_url)
        decisions = [
            producer.publish(camera_id="cam-1", image=IMAGE, capabilities=["sample"], width=4, height=4)
            for _ in range(2)
        ]
        producer.close()
        assert all(decision.targets == ("cli-sample-1",) for decision in decisions)
        wait_for(lambda: redis_client.xlen("samples:processed") == 2, what="two results")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert f"processor cli-sample-1 (sample) on {redis_url}, queue frames.ready.cli-sample-1" in output
    assert "processor cli-sample-1 stopped" in output
    results = [fields for _, fields in redis_client.xrange("samples:processed")]
    assert {fields[b"processor_id"] for fields in results} == {b"cli-sample-1"}
    assert {fields[b"bytes"] for fields in results} == {str(len(IMAGE)).encode()}
    assert registry.get("cli-sample-1") is None  # deregistered on the way out


def test_worker_target_names_an_instance_a_factory_or_a_class(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "cli_target_processors.py").write_text(
        "from tests.echo_processor import EchoProcessor\n"
        "\n"
        "class Ready(EchoProcessor):\n"
        "    def __init__(self):\n"
        "        super().__init__(processor_id='ready-1', capabilities=['echo'], orchestrator_url='')\n"
        "\n"
        "def build():\n"
        "    return EchoProcessor(processor_id='built-1', capabilities=['echo'], orchestrator_url='')\n"
        "\n"
        "processor = build()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_processor("cli_target_processors").processor_id == "built-1"  # the module's instance
    assert load_processor("cli_target_processors:build").processor_id == "built-1"
    assert load_processor("cli_target_processors:Ready").processor_id == "ready-1"
    with pytest.raises(ProcessorLoadError, match="cannot be built without arguments"):
        load_processor("tests.echo_processor")
    with pytest.raises(ProcessorLoadError, match="has no 'missing'"):
        load_processor("cli_target_processors:missing")
    with pytest.raises(ProcessorLoadError, match="cannot import 'no_such_module_here'"):
        load_processor("no_such_module_here")
    with pytest.raises(ProcessorLoadError, match="defines no processor"):
        load_processor("tests.cli_harness")


def test_scheduler_command_beats_until_sigterm(redis_url, redis_client) -> None:
    process = subprocess.Popen(
        [*FRAMEFLOW, "--redis-url", redis_url, "scheduler", "--interval", "0.2"],
        env={**os.environ, "COLUMNS": str(COLUMNS)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: redis_client.xlen("frameflow:health") >= 2, what="two health beats")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert f"frameflow scheduler on {redis_url}, every 0.2s" in output


def test_wait_for_redis_lets_a_command_start_before_redis_does() -> None:
    port = free_port()
    process = subprocess.Popen(
        [*FRAMEFLOW, "--redis-url", f"redis://127.0.0.1:{port}/0", "--wait-for-redis", "30", "processors"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with EmbeddedRedis(port=port):
            output, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, errors
    assert output.strip() == "no processors registered"


# -- the Procfile under honcho ---------------------------------------------------------------
def test_procfile_runs_the_pipeline_and_leaves_nothing_behind_after_sigterm(tmp_path: Path) -> None:
    port, mark = free_port(), uuid.uuid4().hex
    settings = tmp_path / "test.env"
    dashboard_port = free_port()
    settings.write_text(
        f"REDIS_PORT={port}\nDASHBOARD_PORT={dashboard_port}\nMETRICS_PORT=0\nCAMERA_FPS=20\nFRAMEFLOW_TEST_MARK={mark}\n"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("REDIS_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "-f", "Procfile", "-e", f".env,{settings}", "start"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # honcho and its helper processes, for the clean-up below
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(honcho.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    client = redis.Redis(port=port, socket_connect_timeout=1)
    try:
        wait_until(lambda: _results(client) >= 5, 60, _honcho_said("five results", lines))
        wait_until(lambda: _followed(lines) >= 1, 10, _honcho_said("the follower to print a result", lines))
        running = wait_until(lambda: _procfile_processes(mark, port), 10, "the Procfile's processes")
        assert any("redis-server" in command for command in running.values()), running
        _assert_scraping_finds_the_sample_processor(lines)
        page = wait_until(lambda: _http_get(f"http://127.0.0.1:{dashboard_port}/"), 30, "the dashboard's page")
        assert "frameflow" in page
        client.close()
        honcho.send_signal(signal.SIGTERM)
        returncode = honcho.wait(timeout=30)
        reader.join(timeout=10)
        output = "".join(lines)
        assert returncode == 143, output  # honcho's exit code for SIGTERM: every process stopped
        assert "sending SIGKILL" not in output, output  # each one stopped within honcho's 5 s grace
        assert "embedded Redis stopped" in output and "processor sample-1 stopped" in output
        followed = [line for line in lines if line.split("|")[0].strip().endswith("results.1") and "frame=" in line]
        assert all("  samples:processed  sample-1  camera=cam-1  frame=" in line for line in followed), followed
        wait_until(
            lambda: not _procfile_processes(mark, port),
            10,
            lambda: f"these to be gone: {_procfile_processes(mark, port)}",
        )
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis(port=port, socket_connect_timeout=1).ping()
    finally:
        _stop_whatever_is_left(honcho, mark, port)


def _http_get(url: str) -> str | None:
    """The body at ``url``, or ``None`` while nothing answers there."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def _stop_whatever_is_left(honcho: subprocess.Popen, mark: str, port: int) -> None:
    """After a failure: stop honcho the way a person would, then kill what it left (the test has failed)."""
    if honcho.poll() is None:
        honcho.send_signal(signal.SIGTERM)
        try:
            honcho.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
    for pid in _procfile_processes(mark, port):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _assert_scraping_finds_the_sample_processor(lines: list[str]) -> None:
    """The Procfile's scheduler lists the sample processor at /targets, and its /metrics counts frames."""
    found = wait_until(
        lambda: re.search(r"metrics at (http://\S+)/metrics", "".join(lines)),
        10,
        _honcho_said("the scheduler's metrics address", lines),
    )
    with urllib.request.urlopen(f"{found.group(1)}/targets", timeout=5) as response:
        (group,) = json.load(response)
    assert group["labels"]["processor"] == "sample-1" and int(group["labels"]["pid"]) > 0, group
    with urllib.request.urlopen(f"http://{group['targets'][0]}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert re.search(
        r'^frameflow_frames_processed_total\{processor="sample-1",queue="frames.ready.sample-1"\} [1-9]', text, re.M
    ), text


def _honcho_said(what: str, lines: list[str]) -> Callable[[], str]:
    return lambda: f"{what}; honcho said:\n{''.join(lines[-40:])}"


def _results(client: redis.Redis) -> int:
    try:
        return int(client.xlen("samples:processed"))
    except redis.exceptions.ConnectionError:
        return 0  # the Procfile's Redis is not up yet


def _followed(lines: list[str]) -> int:
    return sum(1 for line in list(lines) if "results.1" in line and "samples:processed" in line)


def _procfile_processes(mark: str, port: int) -> dict[int, str]:
    """Live processes (pid: command line) whose environment carries ``FRAMEFLOW_TEST_MARK=mark``, and
    the redis-server on ``port`` (which rewrites its command line and environment as its process title)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        marked = f"FRAMEFLOW_TEST_MARK={mark}".encode() in environ.split(b"\0")
        ours = marked or ("redis-server" in command and f":{port}" in command)
        if ours and state != "Z":
            found[int(entry.name)] = command
    return found


def test_procfile_runs_every_part_of_the_pipeline_with_valid_commands() -> None:
    text = (ROOT / "Procfile").read_text()
    procfile = parse_procfile(text).processes
    # The model processors' lines are commented out (they need torch and weights): valid all the same.
    placeholders = parse_procfile("\n".join(line[1:] for line in text.splitlines() if line.startswith("#"))).processes
    assert set(placeholders) == {"faces", "objects", "gestures", "mqtt"}
    settings = parse_env_file((ROOT / ".env").read_text())
    commands, processor_ids = {}, {}
    for name, command in {**procfile, **placeholders}.items():
        argv = shlex.split(_expand(command, settings))
        while "=" in argv[0]:  # NAME=value before the command
            variable, value = argv.pop(0).split("=", 1)
            if variable == "PROCESSOR_ID":
                processor_ids[name] = value
        assert argv[0] == "frameflow", name
        check_frameflow_command(argv[1:])
        commands[name] = argv
    models = {"faces": "face_detection", "objects": "object_detection", "gestures": "gesture_detection"}
    for name, module in models.items():
        assert commands[name][-4:-2] == ["worker", f"workers.{module}"]
        assert importlib.util.find_spec(f"workers.{module}") is not None
    assert processor_ids == {
        "sample": "sample-1",
        **{name: f"{model.replace('_', '-')}-1" for name, model in models.items()},
    }
    assert commands["redis"] == ["frameflow", "redis", "--port", settings["REDIS_PORT"]]
    assert commands["scheduler"][-3:] == ["scheduler", "--metrics-port", settings["METRICS_PORT"]]
    assert commands["sample"][-4:] == ["worker", "workers.sample", "--health-port", "0"]
    for name in ("faces", "objects"):  # every processor serves /health and /metrics, found through /targets
        assert commands[name][-2:] == ["--health-port", "0"], name
    # The example file (a synthetic camera), at the file's fps unless CAMERA_FPS says otherwise.
    assert commands["cameras"][3:] == ["cameras", "run", "cameras.yml", "--fps", "0"]
    assert commands["results"][3:6] == ["results", "samples:processed", "--follow"]
    assert commands["ingest"][3:6] == ["ingest", "--stream", "frames:metadata"]
    # Everyone reaches the Procfile's Redis: .env names it and empties a REDIS_URL from the shell.
    assert (settings["REDIS_URL"], settings["REDIS_HOST"]) == ("", "127.0.0.1")


def _expand(command: str, settings: dict[str, str]) -> str:
    """Shell parameter expansion of ``$NAME``, ``${NAME}`` and ``${NAME:-default}``, as honcho's shell does it."""

    def value(match: re.Match) -> str:
        name, default = match.group(1) or match.group(3), match.group(2)
        return settings.get(name) or (default if default is not None else "")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", value, command)


# -- docker compose --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())


def test_compose_file_has_the_whole_deployment(compose) -> None:
    services = compose["services"]
    assert set(services) == {
        "redis", "scheduler", "sample-worker", "cameras", "results", "ingest", "otel-collector", "prometheus",
        "grafana", "mosquitto", "mqtt", "dashboard",
    }  # fmt: skip
    redis_command = services["redis"]["command"]
    assert redis_command[0] == "redis-server"
    assert _option(redis_command, "--appendonly") == "yes"
    assert _option(redis_command, "--maxmemory-policy") == "noeviction"
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])
    for name in ("scheduler", "sample-worker", "cameras", "results", "mqtt", "ingest", "dashboard"):
        service = services[name]
        assert service["image"] == "frameflow:latest" and service["build"]["dockerfile"] == "compose/Dockerfile"
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:")  # the MQTT bridge's broker, beside it
    assert services["mqtt"]["environment"]["MQTT_URL"] == "mqtt://mosquitto:1883"
    assert services["dashboard"]["ports"] == ["127.0.0.1:8780:8780"]  # the host's loopback only
    observers = ("otel-collector", "prometheus", "grafana", "mosquitto")
    mounted = [volume.split(":")[0] for name in observers for volume in services[name]["volumes"]]
    for source in (item for item in mounted if item.startswith("./")):
        assert (COMPOSE / source).exists(), source


def test_compose_services_run_commands_the_image_has(compose) -> None:
    dockerfile = (COMPOSE / "Dockerfile").read_text()
    for package in IMAGE_PACKAGES:
        assert f"COPY {package} ./{package}" in dockerfile
    # video: enqueue --source clip.mp4 and RTSP cameras in a container; dashboard: the compose service
    assert "pip install '.[otlp,mqtt,video,dashboard]'" in dockerfile
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert "frameflow = pipeline.tools.cli:main" in setup["options.entry_points"]["console_scripts"]
    assert "dramatiq" in setup["options"]["install_requires"]  # which installs the `dramatiq` command

    checked = 0
    for name, service in compose["services"].items():
        if service.get("image") != "frameflow:latest":
            continue
        command = service["command"]
        if command[0] == "frameflow":
            check_frameflow_command(command[1:])
        else:
            assert command[0] == "dramatiq", name
            arguments = make_argument_parser().parse_args(command[1:])
            for module in (arguments.broker, *arguments.modules):
                assert module.split(".")[0] in IMAGE_PACKAGES, module
                assert importlib.util.find_spec(module) is not None, module
        checked += 1
    assert checked == 7


def test_compose_telemetry_configs_are_wired_together(compose) -> None:
    collector = yaml.safe_load((COMPOSE / "otel-collector.yaml").read_text())
    for pipeline in collector["service"]["pipelines"].values():
        assert set(pipeline["receivers"]) <= set(collector["receivers"])
        assert set(pipeline["exporters"]) <= set(collector["exporters"])
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    prometheus = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    jobs = prometheus["scrape_configs"]
    targets = [target for job in jobs for group in job.get("static_configs", []) for target in group["targets"]]
    assert "otel-collector:8889" in targets  # where the collector exports metrics
    scheduler = compose["services"]["scheduler"]
    metrics = f"scheduler:{_option(scheduler['command'], '--metrics-port')}"
    assert metrics in targets  # the pipeline's metrics
    assert [config["url"] for job in jobs for config in job.get("http_sd_configs", [])] == [f"http://{metrics}/targets"]
    assert scheduler["environment"]["FRAMEFLOW_HEALTH_HOST"] == "0.0.0.0"  # reachable from Prometheus
    processors = [
        service for service in compose["services"].values() if "PROCESSOR_ID" in service.get("environment", {})
    ]
    assert processors
    for service in processors:  # each process serves /metrics, on a port of its own, listed at /targets
        settings = Settings.from_env(service["environment"])
        assert settings.health_port == 0 and settings.health_host == "0.0.0.0", service
    assert {target.split(":")[0] for target in targets} <= {*compose["services"], "localhost"}

    provisioning = COMPOSE / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    [provider] = yaml.safe_load((provisioning / "dashboards" / "frameflow.yaml").read_text())["providers"]
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    dashboard = json.loads((COMPOSE / "grafana" / "frameflow-dashboard.json").read_text())
    assert mounts["./grafana/frameflow-dashboard.json"].startswith(provider["options"]["path"] + "/")
    assert dashboard["uid"] == "frameflow-pipeline" and dashboard["panels"]


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def check_frameflow_command(args: list[str]) -> None:
    """Parse ``frameflow ARGS`` as the real command line would (every option and argument), running nothing."""
    context = click.Context(main, info_name="frameflow")
    remaining = list(args)
    while remaining and remaining[0].startswith("-"):
        option = next((param for param in main.params if remaining[0] in getattr(param, "opts", ())), None)
        assert option is not None, f"frameflow has no global option {remaining[0]}"
        remaining = remaining[1:] if getattr(option, "is_flag", False) else remaining[2:]
    command: click.Command = main
    while isinstance(command, click.Group):
        runs_alone = not remaining or command.get_command(context, remaining[0]) is None
        if command is not main and command.invoke_without_command and runs_alone:
            break  # a group that also runs alone, with its own options (frameflow redis --port 6379)
        assert remaining, f"frameflow {' '.join(args)}: no command"
        name, remaining = remaining[0], remaining[1:]
        found = command.get_command(context, name)
        assert found is not None, f"frameflow has no command {name!r} (in {' '.join(args)})"
        command = found
        if isinstance(command, click.Group):
            context = click.Context(command, info_name=name, parent=context)
    command.make_context(command.name or "", remaining, parent=context)
