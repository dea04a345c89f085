"""How ``frameflow processors`` shows the processes of a processor run as several: a row per
process under the processor's row, and a ``processes`` list in its JSON (pid, host, health endpoint,
counters). The registry entries they come from: :mod:`pipeline.domain.process_entries`."""

from __future__ import annotations

from typing import Any

from pipeline.domain.registry import ProcessorInfo

#: What ``processors --json`` says of each process of a processor.
PROCESS_FIELDS = (
    "pid", "host", "health_endpoint", "registered_at", "heartbeat_at", "in_flight", "processed", "failed",
    "rejected", "latency_ms", "last_error", "last_rejection",
)  # fmt: skip


def process_row(process: ProcessorInfo, *, state: str, heartbeat: str, with_rate: bool) -> list[str]:
    """The cells of one process's row, in the processors table's columns (``└ pid N`` first)."""
    counters = (process.in_flight, process.processed, process.failed, process.rejected)
    return [
        f"└ pid {process.pid}",
        "",
        str(process.capacity),
        state,
        *(str(counter) for counter in counters),
        *([""] if with_rate else []),
        f"{process.latency_ms:.1f}",
        heartbeat,
        f"{process.host}:{process.pid}",
    ]


def process_listing(processes: list[ProcessorInfo]) -> list[dict[str, Any]]:
    """The processes of one processor, for ``processors --json``."""
    return [{name: getattr(process, name) for name in PROCESS_FIELDS} for process in processes]
