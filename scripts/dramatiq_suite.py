"""Run Dramatiq's own test suite against ``RedisStreamsBroker`` and the StubBroker, and compare.

Usage::

    .venv/bin/python scripts/dramatiq_suite.py              # both runs, summary, exit status
    .venv/bin/python scripts/dramatiq_suite.py -k retries   # extra arguments go to both pytest runs

What it does:

1. ``pip download`` the sdist of the installed Dramatiq into ``.dramatiq-suite/`` (git-ignored;
   downloaded once) and extracts its ``tests/`` folder there. Dramatiq's tests are never copied
   into this repository. The sdist ships no ``conftest.py``/``common.py``: this script writes its
   own (below) with the fixtures and helpers the selected tests use.
2. Runs the tests for actors, workers, retries, time and age limits, callbacks, pipelines, groups,
   results, shutdown and asyncio (:data:`TEST_FILES`; the 2.2.1 sdist ships no ``tests/middleware``,
   so its retry/time-limit/shutdown/asyncio coverage is what the top-level files hold; the script
   says which files it could not find) twice, each in a child pytest: once with
   Dramatiq's StubBroker as the ``stub_broker`` fixture (the baseline), once with
   ``RedisStreamsBroker`` imported on its own from the broker core (``pipeline.streams``; every
   test fails if that loaded the frame domain, the middleware or anything above) on a real
   Redis: ``FRAMEFLOW_TEST_REDIS_URL`` when set and answering (its database is flushed before
   every test), else an embedded Redis started for the run.
   The Redis result and rate-limiter backends use that Redis in both runs.
3. Prints counts for both runs and every test that passes on the StubBroker but not on ours,
   then ``N passed, M failed`` for our broker. Exits non-zero when that list is not empty or
   when either run collected no tests.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".dramatiq-suite"
#: The tests in scope, run when the sdist ships them.
TEST_FILES = [
    *(f"test_{name}.py" for name in ["actors", "worker", "callbacks", "composition", "results", "generic_actors"]),
    *(f"middleware/test_{name}.py" for name in ["retries", "time_limit", "shutdown", "asyncio"]),
]
#: Seconds a single test may take before pytest-timeout fails it.
TEST_TIMEOUT_S = 60

CONFTEST = '''"""Fixtures for Dramatiq's tests, written by frameflow's scripts/dramatiq_suite.py."""
import os
import sys

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.rate_limits import backends as rate_limit_backends
from dramatiq.results import backends as result_backends

#: What the broker core must not import: the frame domain, the processes, the middleware, the tools.
ABOVE_THE_CORE = (
    "pipeline.domain", "pipeline.processes", "pipeline.cameras", "pipeline.tools", "middleware", "workers",
)

BROKER = os.environ["FRAMEFLOW_SUITE_BROKER"]
REDIS_URL = os.environ["FRAMEFLOW_SUITE_REDIS_URL"]


@pytest.fixture(autouse=True)
def _flushed_redis():
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()


@pytest.fixture
def stub_broker():
    if BROKER == "stub":
        broker = StubBroker()
    else:
        from pipeline.streams import RedisStreamsBroker  # the broker core, on its own

        broker = RedisStreamsBroker(REDIS_URL, lease_ms=2000)
        above = sorted(name for name in sys.modules if name.startswith(ABOVE_THE_CORE))
        assert not above, f"the broker core loaded modules of the layers above it: {above}"
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def stub_worker(stub_broker):
    worker = dramatiq.Worker(stub_broker, worker_timeout=100, worker_threads=32)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def redis_result_backend():
    return result_backends.RedisBackend(url=REDIS_URL)


@pytest.fixture(params=["redis", "stub"])
def result_backend(request):
    if request.param == "redis":
        return result_backends.RedisBackend(url=REDIS_URL)
    return result_backends.StubBackend()


@pytest.fixture(params=["redis", "stub"])
def rate_limiter_backend(request):
    if request.param == "redis":
        return rate_limit_backends.RedisBackend(url=REDIS_URL)
    return rate_limit_backends.StubBackend()
'''

COMMON = '''"""Helpers Dramatiq's tests import, written by frameflow's scripts/dramatiq_suite.py."""
import contextlib
import os
import platform

import dramatiq
import pytest
from dramatiq.threading import is_gevent_active

skip_in_ci = pytest.mark.skipif(bool(os.getenv("CI") or os.getenv("GITHUB_ACTION")), reason="skipped in CI")
skip_on_windows = pytest.mark.skipif(platform.system() == "Windows", reason="skipped on Windows")
skip_on_pypy = pytest.mark.skipif(platform.python_implementation() == "PyPy", reason="no time limits on PyPy")
skip_with_gevent = pytest.mark.skipif(is_gevent_active(), reason="not with gevent")
skip_without_gevent = pytest.mark.skipif(not is_gevent_active(), reason="gevent only")
RABBITMQ_CREDENTIALS = ("guest", "guest")


@contextlib.contextmanager
def worker(*args, **kwargs):
    instance = dramatiq.Worker(*args, **kwargs)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
'''

PYTEST_INI = "[pytest]\naddopts = -p no:cacheprovider\n"


def prepare_suite(version: str) -> Path:
    """Download the sdist (once), extract its tests and write our conftest and helpers."""
    CACHE.mkdir(exist_ok=True)
    sdist = CACHE / f"dramatiq-{version}.tar.gz"
    if not sdist.exists():
        command = [sys.executable, "-m", "pip", "download", f"dramatiq=={version}"]
        command += ["--no-deps", "--no-binary", ":all:", "--quiet", "-d", str(CACHE)]
        subprocess.run(command, check=True)
    suite = CACHE / f"suite-{version}"
    prefix = f"dramatiq-{version}/tests/"
    with tarfile.open(sdist) as archive:
        members = [item for item in archive.getmembers() if item.isfile() and item.name.startswith(prefix)]
        members = [item for item in members if ".." not in item.name.split("/")]
        for member in members:
            member.name = member.name[len(f"dramatiq-{version}/") :]
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python 3.11.4+
        archive.extractall(suite, members=members, **safe)  # type: ignore[arg-type]
    tests = suite / "tests"
    for folder in [tests, *(path for path in tests.rglob("*") if path.is_dir())]:
        (folder / "__init__.py").touch()
    (tests / "conftest.py").write_text(CONFTEST)
    (tests / "common.py").write_text(COMMON)
    (suite / "pytest.ini").write_text(PYTEST_INI)
    return suite


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.exceptions.RedisError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    url = os.environ.get("FRAMEFLOW_TEST_REDIS_URL")
    if url and answers(url):
        yield url
        return
    from pipeline.streams import EmbeddedRedis

    with EmbeddedRedis() as server:
        yield server.url


def run_pytest(broker: str, suite: Path, files: list[str], url: str, extra: list[str]) -> dict[str, str]:
    """Run ``files`` in a child pytest; returns ``{test id: passed|failed|skipped}``."""
    report = CACHE / f"junit-{broker}.xml"
    report.unlink(missing_ok=True)
    env = {**os.environ, "FRAMEFLOW_SUITE_BROKER": broker, "FRAMEFLOW_SUITE_REDIS_URL": url}
    command = [sys.executable, "-m", "pytest", *[f"tests/{name}" for name in files]]
    command += ["-q", "--no-header", "-rfE", f"--timeout={TEST_TIMEOUT_S}", f"--junitxml={report}", *extra]
    print(f"\n=== Dramatiq's tests with the {broker} broker: {' '.join(command[1:])}", flush=True)
    subprocess.run(command, cwd=suite, env=env, check=False)
    return parse_junit(report) if report.exists() else {}


def parse_junit(report: Path) -> dict[str, str]:
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    outcomes: dict[str, str] = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").removeprefix("tests.").replace(".", "/")
        test_id = f"{module}.py::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        if rank[outcome] >= rank[outcomes.get(test_id, "passed")]:
            outcomes[test_id] = outcome
    return outcomes


def counts(outcomes: dict[str, str]) -> str:
    tally = Counter(outcomes.values())
    return f"{tally['passed']} passed, {tally['failed']} failed, {tally['skipped']} skipped"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _, pytest_args = parser.parse_known_args(argv)  # whatever it does not know goes to both pytest runs
    started = time.monotonic()
    version = importlib.metadata.version("dramatiq")
    suite = prepare_suite(version)
    files = [name for name in TEST_FILES if (suite / "tests" / name).is_file()]
    missing = sorted(set(TEST_FILES) - set(files))
    if missing:
        print(f"Not in the dramatiq {version} sdist, so not run: {', '.join(missing)}")
    with redis_server() as url:
        stub = run_pytest("stub", suite, files, url, pytest_args)
        ours = run_pytest("frameflow", suite, files, url, pytest_args)
    regressions = sorted(test for test, outcome in stub.items() if outcome == "passed" and ours.get(test) != "passed")
    print(f"\n=== Dramatiq {version} test suite, {time.monotonic() - started:.0f}s")
    print(f"StubBroker (baseline):  {counts(stub)}")
    print(f"RedisStreamsBroker:     {counts(ours)}")
    if not stub or not ours:
        print("A run collected no tests (or pytest did not write its report): that is a failure.")
    if regressions:
        print(f"Pass with the StubBroker but not with RedisStreamsBroker ({len(regressions)}):")
        for test in regressions:
            print(f"  {test} ({ours.get(test, 'not run')})")
    elif stub:
        print("Every test that passes with the StubBroker passes with RedisStreamsBroker.")
    tally = Counter(ours.values())
    print(f"{tally['passed']} passed, {tally['failed']} failed")
    return 1 if regressions or not stub or not ours else 0


if __name__ == "__main__":
    sys.exit(main())
