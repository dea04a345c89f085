"""The files by which the frameflow processes of one machine share one embedded Redis.

A folder only its owner may enter (``Settings.runtime_dir``, mode 0700) holds:

* ``lock`` — ``flock``-ed while a process looks for the server, starts it or registers
  as its user, and while the watchdog decides to stop it: never two servers at once,
  never a user registered with a server that is going away;
* ``server.json`` — the running server: its URL, its watchdog, who started it;
* ``users/<pid>`` — one file per process that uses the server, holding the process's
  start time: a SIGKILLed user leaves its file behind, and a pid the kernel has since
  given to another process must not keep the server alive;
* ``redis/`` — the server's data folder (its log); ``watchdog.log`` — the watchdog's.

Processes are named by pid *and* start time (:class:`ProcessStamp`) for the same reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import EmbeddedRedisError

#: How long a process waits for another to release the lock (a start takes a second or two).
LOCK_TIMEOUT_S = 30.0

#: Process states of ``/proc/PID/stat`` that mean "gone": zombie, dead.
_GONE_STATES = frozenset("ZX")


def _stat_of(pid: int) -> tuple[str, int] | None:
    """A process's state letter and start time (clock ticks after boot), or ``None`` when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (not Linux): a signal 0 says whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "R", 0
    fields = text[text.rindex(")") + 2 :].split()  # the command name, in parentheses, may hold spaces
    return fields[0], int(fields[19])


@dataclasses.dataclass(frozen=True)
class ProcessStamp:
    """A process named so that its pid, reused after its death, does not pass for it."""

    pid: int
    started: int

    @classmethod
    def of(cls, pid: int) -> ProcessStamp | None:
        found = _stat_of(pid)
        return None if found is None else cls(pid, found[1])

    @classmethod
    def current(cls) -> ProcessStamp:
        stamp = cls.of(os.getpid())
        assert stamp is not None
        return stamp

    def alive(self) -> bool:
        found = _stat_of(self.pid)
        return found is not None and found[0] not in _GONE_STATES and found[1] == self.started


@dataclasses.dataclass(frozen=True)
class ServerRecord:
    """What ``server.json`` says of the running shared server."""

    url: str
    watchdog: ProcessStamp
    started_by: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "url": self.url,
                "watchdog_pid": self.watchdog.pid,
                "watchdog_started": self.watchdog.started,
                "started_by": self.started_by,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ServerRecord:
        fields = json.loads(text)
        return cls(
            url=str(fields["url"]),
            watchdog=ProcessStamp(int(fields["watchdog_pid"]), int(fields["watchdog_started"])),
            started_by=int(fields["started_by"]),
        )


class RuntimeDir:
    """The runtime folder of the shared embedded Redis (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.record_file = self.path / "server.json"
        self.users_dir = self.path / "users"
        self.data_dir = self.path / "redis"
        self.log_file = self.path / "watchdog.log"

    def prepare(self) -> RuntimeDir:
        """Create the folder (mode 0700) or check that only this user can enter it."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            found = os.lstat(self.path)
        except OSError as error:
            raise EmbeddedRedisError(f"cannot use the runtime folder {self.path}: {error.strerror or error}") from None
        if not stat.S_ISDIR(found.st_mode):
            raise EmbeddedRedisError(
                f"the runtime folder {self.path} is not a folder (a link?): set FRAMEFLOW_RUNTIME_DIR"
            )
        if found.st_uid != os.getuid() or found.st_mode & 0o077:
            raise EmbeddedRedisError(
                f"the runtime folder {self.path} is not private to this user (owner uid {found.st_uid}, "
                f"mode {stat.S_IMODE(found.st_mode):o}): set FRAMEFLOW_RUNTIME_DIR"
            )
        self.users_dir.mkdir(mode=0o700, exist_ok=True)
        return self

    @contextlib.contextmanager
    def locked(self, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold ``lock`` (``flock``, released by the kernel if the holder dies)."""
        descriptor = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EmbeddedRedisError(
                            f"another process has held {self.path / 'lock'} for {timeout_s:.0f}s"
                        ) from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    # -- the server ------------------------------------------------------------------------
    def read_record(self) -> ServerRecord | None:
        """The server ``server.json`` names, or ``None`` when there is none (or it is unreadable)."""
        try:
            return ServerRecord.from_json(self.record_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a torn or foreign file: treated as no server, and replaced

    def write_record(self, record: ServerRecord) -> None:
        partial = self.record_file.with_suffix(".partial")
        partial.write_text(record.to_json())
        partial.replace(self.record_file)  # readers see the whole record or none

    def remove_record(self, record: ServerRecord | None = None) -> None:
        """Remove ``server.json``; with ``record``, only while it still names that server."""
        if record is None or self.read_record() == record:
            self.record_file.unlink(missing_ok=True)

    # -- its users -------------------------------------------------------------------------
    def register(self, user: ProcessStamp) -> None:
        partial = self.path / f"user-{user.pid}.partial"
        partial.write_text(str(user.started))
        partial.replace(self.users_dir / str(user.pid))  # the watchdog never reads a half-written file

    def unregister(self, pid: int) -> None:
        (self.users_dir / str(pid)).unlink(missing_ok=True)

    def live_users(self) -> list[ProcessStamp]:
        """The registered users still alive; the files of the others are removed."""
        alive = []
        for path in self.users_dir.iterdir():
            try:
                user = ProcessStamp(int(path.name), int(path.read_text()))
            except (OSError, ValueError):
                user = None
            if user is not None and user.alive():
                alive.append(user)
            else:
                path.unlink(missing_ok=True)
        return alive

    def clear_users(self) -> None:
        for path in self.users_dir.iterdir():
            path.unlink(missing_ok=True)
