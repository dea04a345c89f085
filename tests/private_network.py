"""Run one test inside a network namespace of its own, where it may own ``127.0.0.1:6379``.

A client that loses track of its server falls back to redis-py's default address,
``localhost:6379``. On a machine that runs a Redis there (most machines that run
Redis), such a client does not fail: it writes to a server nobody reads. To show that
frameflow never does this, a test needs a *decoy* Redis at exactly that address, and
must not disturb the machine's own. :func:`in_private_network` gives it one: the test
is run again by a child ``pytest`` under ``unshare --net`` (a loopback interface of
its own, nothing else reachable), and the outer test passes only if that run passed.

Needs root (CI runs as root) or unprivileged user namespaces (``--map-root-user``);
without either the test fails and says so: it never skips.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from tests.processes import ROOT

F = TypeVar("F", bound=Callable[..., Any])

#: Set in the child run: the test body runs there, on its private loopback.
INSIDE = os.environ.get("FRAMEFLOW_TEST_PRIVATE_NETWORK") == "1"

#: The address redis-py connects to when no host and port are given.
DEFAULT_REDIS_PORT = 6379


def in_private_network(test: F) -> F:
    """Decorate a test that takes no fixtures: outside, it runs itself in a fresh network namespace."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if INSIDE:
            return test(*args, **kwargs)
        _run_in_namespace(os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0])
        return None

    return wrapper  # type: ignore[return-value]


def _run_in_namespace(node_id: str) -> None:
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        pytest.fail("this test needs util-linux's unshare and iproute2's ip (apt-get install util-linux iproute2)")
    namespace = [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--map-root-user", "--net"]
    script = f'{ip} link set lo up && exec "$0" -m pytest -q -p no:cacheprovider --no-header "$1"'
    env = {**os.environ, "FRAMEFLOW_TEST_PRIVATE_NETWORK": "1"}
    env.pop("PYTEST_CURRENT_TEST", None)
    env.pop("FRAMEFLOW_TEST_REDIS_URL", None)  # that server is outside the namespace
    run = subprocess.run(
        [*namespace, "sh", "-c", script, sys.executable, node_id],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    output = (run.stdout + run.stderr)[-6000:]
    if run.returncode != 0 and "unshare failed" in output:
        pytest.fail(f"cannot make a private network namespace (needs root or user namespaces): {output.strip()}")
    assert run.returncode == 0 and " passed" in output, f"the run in a private network failed:\n{output}"
