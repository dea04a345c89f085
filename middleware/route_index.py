"""Where the router finds a capability's processor: an index of the live processors, kept as it routes.

The router refreshes its view every ``refresh_s`` (the registry through
:class:`~pipeline.domain.registry_view.RegistryView`, the loads measured by
:mod:`middleware.load`); between two refreshes each frame it routes adds ``1 / capacity``
to its processor's load. Choosing by scanning every live processor for every frame
cost O(N): with 500 processors of one capability a single-frame publish ran at a
quarter of its one-processor rate. This index, built once per registry view, sorts the
processors out once:

* per capability, the **routable** processors (live, not draining, breaker not open)
  and the **tripped** ones (breaker open: the router asks each whether its cool-down
  lets a probe through, as before);
* the routable processors that offer exactly the same capabilities form a group with a
  heap of ``(load, processor id)``. The least-loaded processor of a capability is the
  best of its groups' heap tops by ``(load, -capabilities of the frame it covers, id)``,
  the order the router always used, found in O(G log N) (G, the distinct capability
  sets offering it, is usually 1). A routed frame pushes its processor's new load
  (O(log N)); the entry it replaces is dropped when it reaches the top;
* per capability and camera, the **ranking** of camera affinity
  (:func:`middleware.affinity.ranked`), kept while the processors stay the same, so a
  camera's instance is its first one whose queue is not full (O(1) while none is).

A refresh that measured new loads rebuilds the heaps (O(N), every ``refresh_s``); a
registry view that changed builds a new index. The router holds its lock around every
call that reads or moves loads.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.domain.registry import BREAKER_OPEN, ProcessorInfo

from .affinity import CAMERA_AFFINITY, ranked

#: Camera rankings an index keeps at most; past that it forgets them all and ranks again.
RANKINGS_KEPT = 4096

#: A heap holding more stale entries than this many times its members is rebuilt from the loads.
STALE_FACTOR = 2


@dataclass
class _Group:
    """Routable processors that offer exactly the same capabilities, and the heap of their loads:
    ``(load, processor id, stamp)``, current while its stamp is the processor's."""

    capabilities: frozenset[str]
    members: list[ProcessorInfo]
    heap: list[tuple[float, str, int]] = field(default_factory=list)


class RouteIndex:
    """The processors of one registry view, sorted out by capability, and their loads.

    Parameters:
      processors: the live processors, as the registry lists them.
    """

    def __init__(self, processors: Sequence[ProcessorInfo]) -> None:
        self.processors = processors
        #: Each processor's load: measured at the refresh, plus what was routed since.
        self.load: dict[str, float] = {}
        self._stamps: dict[str, int] = {}
        self._by_id = {info.processor_id: info for info in processors}
        self._routable: dict[str, list[ProcessorInfo]] = {}
        self._tripped: dict[str, list[ProcessorInfo]] = {}
        self._affine: set[str] = set()
        self._groups: dict[str, list[_Group]] = {}
        self._by_capabilities: dict[frozenset[str], _Group] = {}
        self._group_of: dict[str, _Group] = {}
        self._rankings: dict[tuple[str, str], list[ProcessorInfo]] = {}
        for info in processors:
            if not info.draining:
                self._add(info)

    def _add(self, info: ProcessorInfo) -> None:
        offered = list(dict.fromkeys(info.capabilities))
        if not offered:
            return  # serves nothing
        if info.breaker == BREAKER_OPEN:
            for capability in offered:
                self._tripped.setdefault(capability, []).append(info)
            return
        for capability in offered:
            self._routable.setdefault(capability, []).append(info)
            if info.affinity == CAMERA_AFFINITY:
                self._affine.add(capability)
        key = frozenset(offered)
        group = self._by_capabilities.get(key)
        if group is None:
            group = self._by_capabilities[key] = _Group(key, [])
            for capability in offered:
                self._groups.setdefault(capability, []).append(group)
        group.members.append(info)
        self._group_of[info.processor_id] = group

    # -- what the router asks ------------------------------------------------------------
    def routable(self, capability: str) -> list[ProcessorInfo]:
        """Live, not draining, breaker not open, offering ``capability``: in registry order."""
        return self._routable.get(capability, [])

    def tripped(self, capability: str) -> list[ProcessorInfo]:
        """Live, not draining, offering ``capability``, whose breaker is open: in registry order."""
        return self._tripped.get(capability, [])

    def affine(self, capability: str) -> bool:
        """Whether a routable processor of ``capability`` declares camera affinity."""
        return capability in self._affine

    def ranking(self, capability: str, camera_id: str) -> list[ProcessorInfo]:
        """The routable processors of ``capability`` from ``camera_id``'s first choice to its last."""
        key = (capability, camera_id)
        found = self._rankings.get(key)
        if found is None:
            if len(self._rankings) >= RANKINGS_KEPT:
                self._rankings.clear()
            found = self._rankings[key] = ranked(camera_id, self.routable(capability))
        return found

    def least_loaded(
        self, capability: str, capabilities: Sequence[str], also: Sequence[ProcessorInfo] = ()
    ) -> ProcessorInfo | None:
        """The routable processor of ``capability`` (or one of ``also``: probes let through) with the
        lowest load; on a tie, the one covering more of the frame's ``capabilities``, then the lowest id."""
        best: tuple[float, int, str] | None = None
        for group in self._groups.get(capability, ()):
            top = self._top(group)
            if top is not None:
                key = (top[0], -covered(group.capabilities, capabilities), top[1])
                best = key if best is None or key < best else best
        chosen = self._by_id[best[2]] if best is not None else None
        for info in also:
            key = (self.load.get(info.processor_id, 0.0), -covered(info.capabilities, capabilities), info.processor_id)
            if best is None or key < best:
                best, chosen = key, info
        return chosen

    # -- what moves loads ------------------------------------------------------------------
    def measured(self, load: Mapping[str, float]) -> None:
        """Start again from measured loads (the router's refresh): every heap rebuilt."""
        self.load = dict(load)
        self._stamps = {}
        for group in self._by_capabilities.values():
            self._rebuild(group)

    def routed(self, info: ProcessorInfo) -> None:
        """One more frame for ``info``: its load grows by ``1 / capacity``."""
        processor_id = info.processor_id
        load = self.load[processor_id] = self.load.get(processor_id, 0.0) + 1 / max(1, info.capacity)
        group = self._group_of.get(processor_id)
        if group is None:
            return  # a probe of an open breaker: in no heap
        stamp = self._stamps[processor_id] = self._stamps.get(processor_id, 0) + 1
        heapq.heappush(group.heap, (load, processor_id, stamp))
        if len(group.heap) > STALE_FACTOR * len(group.members) + 16:
            self._rebuild(group)  # entries replaced deep in the heap (camera affinity): drop them

    def _top(self, group: _Group) -> tuple[float, str, int] | None:
        heap = group.heap
        while heap and heap[0][2] != self._stamps.get(heap[0][1], 0):
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _rebuild(self, group: _Group) -> None:
        group.heap = [
            (self.load.get(info.processor_id, 0.0), info.processor_id, self._stamps.get(info.processor_id, 0))
            for info in group.members
        ]
        heapq.heapify(group.heap)


def covered(offered: frozenset[str] | Sequence[str], capabilities: Sequence[str]) -> int:
    """How many of a frame's ``capabilities`` a processor offering ``offered`` covers."""
    return sum(1 for capability in capabilities if capability in offered)
