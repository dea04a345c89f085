"""Settling a long-running process's heap once it has started, so the collector stops rescanning it.

Python's cyclic garbage collector now and then runs a full collection (generation 2): it walks
every container object the process holds, with the GIL held, and every thread waits. A processor
holds some 100,000 of them once started (its libraries, Dramatiq, redis-py; a model holds many
more), nearly all of them for its whole life. The first full collection comes a few seconds after
start-up, when the frames are already flowing: issue 19's 10-second latency runs (10 cameras x
30 fps, 100 KB frames) found it in the processor in 6 runs of 8, 16-95 ms with the frames in flight
waiting for it, and in the cameras' process in 5 of 15 (19-60 ms): the one stall that recurred at
the same place, and the largest part of the max.

:func:`settle_heap` collects the young generations once, before the process takes its first frame
(start-up's recent garbage goes), then moves what is left to the permanent generation
(``gc.freeze``): later collections scan only what the process allocated since. It does not run a
full collection first: that walks the whole heap, which costs memory bandwidth, not instructions
(16-27 ms in the benchmark's processor, more beside a model, for 112 unreachable objects found),
and it would be paid by every start, restart and failover of a processor. The cost of both
shortcuts: a cycle of objects frozen here that is garbage already, or becomes garbage later, is
never freed. Start-up's objects live as long as the process, so that is little; and it runs once
per process, so a test suite that starts many processors freezes once.
"""

from __future__ import annotations

import gc
import logging
import os
import time

logger = logging.getLogger(__name__)

#: The process (pid) whose heap was settled: a forked child settles its own.
_settled_in: int | None = None


def settle_heap() -> bool:
    """Collect, then freeze what is left; once per process. True if this call did it."""
    global _settled_in
    if _settled_in == os.getpid():
        return False
    _settled_in = os.getpid()
    began = time.perf_counter()
    gc.collect(1)  # the young generations: see the module docstring for why not a full collection
    gc.freeze()
    if logger.isEnabledFor(logging.DEBUG):  # counting the frozen objects walks them all: milliseconds
        logger.debug(
            "Settled the heap: %d objects frozen in %.1f ms.",
            gc.get_freeze_count(),
            (time.perf_counter() - began) * 1000,
        )
    return True
