"""Which fork of the process this is, without a ``getpid()`` system call each time.

Objects that own threads or sockets (the ack batcher, the hot path's connections)
must not use their parent's after a fork; they compare the generation they were
made in with :func:`generation`, which only changes in a forked child.
"""

from __future__ import annotations

import os

_generation = 0


def _forked() -> None:
    global _generation
    _generation += 1


def generation() -> int:
    """A number that changes in a forked child (and stays the same otherwise)."""
    return _generation


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
