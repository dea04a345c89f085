"""The owner of the shared embedded Redis: ``python -m pipeline.streams.redis_watchdog RUNTIME_DIR GRACE_S``.

:mod:`.shared_redis` starts it, detached (a session of its own), when a process needs the shared
server and none runs. It starts ``redis-server`` as its child (which the kernel stops if the
watchdog dies, SIGKILL included: :class:`~.embedded.EmbeddedRedis`), writes the server's record,
prints ``ready``, then watches the users registered in the runtime folder. When none has been
alive for ``GRACE_S`` seconds, it removes the record under the lock (so no process registers with
a server that is going away) and stops the server. SIGTERM (``frameflow redis stop``) stops it at once.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
import time

from .embedded import EmbeddedRedis
from .runtime_files import ProcessStamp, RuntimeDir, ServerRecord

logger = logging.getLogger("frameflow.redis_watchdog")

#: How often the watchdog looks at its users and its server.
WATCH_INTERVAL_S = 0.2


def watch(
    runtime: RuntimeDir, server: EmbeddedRedis, record: ServerRecord, grace_s: float, stopping: threading.Event
) -> str:
    """Watch until the server should stop; returns why."""
    last_user_seen = time.monotonic()
    while not stopping.wait(WATCH_INTERVAL_S):
        if server.process is None or server.process.poll() is not None:
            return f"redis-server exited: {server.log_tail()}"
        if runtime.live_users():
            last_user_seen = time.monotonic()
            continue
        if time.monotonic() - last_user_seen < grace_s:
            continue
        with runtime.locked():
            if runtime.live_users():  # one registered while we looked
                last_user_seen = time.monotonic()
                continue
            runtime.remove_record(record)
        return f"no user for {grace_s:g}s"
    return "asked to stop"


def serve(runtime: RuntimeDir, grace_s: float) -> int:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    shutil.rmtree(runtime.data_dir, ignore_errors=True)  # the log of a server before this one
    runtime.data_dir.mkdir(mode=0o700)
    server = EmbeddedRedis(data_dir=str(runtime.data_dir)).start()
    record = ServerRecord(url=server.url, watchdog=ProcessStamp.current(), started_by=os.getppid())
    runtime.write_record(record)
    logger.info("shared embedded Redis at %s started for pid %d", server.url, record.started_by)
    print("ready", flush=True)
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the starter stops reading
    try:
        reason = watch(runtime, server, record, grace_s, stopping)
    finally:
        with runtime.locked():
            runtime.remove_record(record)
        server.stop()
    logger.info("shared embedded Redis at %s stopped: %s", server.url, reason)
    return 0


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s pid %(process)d %(levelname)s: %(message)s")
    runtime_path, grace_s = argv
    try:
        return serve(RuntimeDir(runtime_path).prepare(), float(grace_s))
    except Exception as error:  # one line in the log, which the starter quotes
        logger.error("cannot run the shared embedded Redis: %s", error)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
