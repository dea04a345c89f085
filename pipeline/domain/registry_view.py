"""A process's view of the live processors, read again only when the registry changed.

Reading the registry is one ``HGETALL`` per processor and the parse of every entry: with
500 processors about 30 ms of client CPU, which a router paid at every refresh (each
``refresh_s``, 0.5 s). Yet what a reader like the router takes from an entry (capabilities,
capacity, queue, bound, breaker, draining, affinity) changes only through
:meth:`~pipeline.domain.registry.ProcessorRegistry.register`, ``update`` and ``deregister``,
each of which stamps a new version token; and an entry leaves only by deregistering or
by expiring. So :meth:`RegistryView.live` asks two cheap questions, whether the token is
still the one the view was read with (``GET``) and whether every entry of the view still
exists (one ``EXISTS`` of all their keys), and reads every entry again only when an answer
is no, when it was told to (:meth:`RegistryView.forget`), or when the view is older than
``max_age_s``. That last bound covers entries written by something that stamps no token
(an older frameflow during an upgrade): they are seen within ``max_age_s``.

What a heartbeat rewrites (in flight, processed, latency, the rate) is as old as the last
full read in this view: routing does not read it; readers that show it read the registry.
"""

from __future__ import annotations

import threading
import time

from pipeline.domain.registry import ProcessorInfo, ProcessorRegistry

#: The longest a view is trusted without reading every entry again, in seconds.
MAX_AGE_S = 5.0


class RegistryView:
    """The live processors of ``registry``, as :meth:`ProcessorRegistry.list` returns them, kept.

    Parameters:
      registry: the registry read.
      max_age_s: how long a view may be kept at most when nothing says it changed.
    """

    def __init__(self, registry: ProcessorRegistry, *, max_age_s: float = MAX_AGE_S) -> None:
        self.registry = registry
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._processors: list[ProcessorInfo] | None = None
        self._version: bytes | None = None
        self._read_at = 0.0

    def live(self) -> list[ProcessorInfo]:
        """The live processors: the same list object as the previous call when nothing changed."""
        with self._lock:
            kept, version, read_at = self._processors, self._version, self._read_at
        current = self.registry.version()  # read before the entries: a change after it is seen next time
        if (
            kept is not None
            and current == version
            and time.monotonic() - read_at < self.max_age_s
            and self.registry.all_exist(info.processor_id for info in kept)
        ):
            return kept
        processors = self.registry.list()
        with self._lock:
            self._processors, self._version, self._read_at = processors, current, time.monotonic()
        return processors

    def forget(self) -> None:
        """Read every entry at the next :meth:`live` (a processor is known to have just registered)."""
        with self._lock:
            self._processors = None
