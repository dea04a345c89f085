"""The dashboard's settings, read from the environment in one place.

The token guards every action: without ``FRAMEFLOW_DASHBOARD_TOKEN`` the dashboard is read-only,
and every action answers 403. The token never travels to the page; the operator types it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

#: Where ``frameflow dashboard`` listens unless told otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8780


@dataclasses.dataclass(frozen=True)
class DashboardSettings:
    """Parameters:
    token: ``FRAMEFLOW_DASHBOARD_TOKEN``; actions need it in the ``X-Frameflow-Token`` header.
      Empty: read-only.
    trace_url: ``FRAMEFLOW_DASHBOARD_TRACE_URL``, a tracing UI's page of one trace with ``{trace_id}``
      in it (Jaeger: ``http://localhost:16686/trace/{trace_id}``); empty: frames link to no trace.
    interval_s: ``FRAMEFLOW_DASHBOARD_INTERVAL_S``, seconds between two reads of Redis (one poller
      for every open page).
    history_s: seconds of frames/s and latency the charts show.
    """

    token: str = ""
    trace_url: str = ""
    interval_s: float = 1.0
    history_s: float = 300.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DashboardSettings:
        env = os.environ if environ is None else environ
        raw_interval = env.get("FRAMEFLOW_DASHBOARD_INTERVAL_S", "1")
        try:
            interval_s = float(raw_interval)
        except ValueError:
            raise ValueError(f"FRAMEFLOW_DASHBOARD_INTERVAL_S={raw_interval!r} is not a number of seconds") from None
        if not 0.05 <= interval_s <= 60:
            raise ValueError(f"FRAMEFLOW_DASHBOARD_INTERVAL_S={raw_interval!r} must be between 0.05 and 60 seconds")
        trace_url = env.get("FRAMEFLOW_DASHBOARD_TRACE_URL", "")
        if trace_url and "{trace_id}" not in trace_url:
            raise ValueError(f"FRAMEFLOW_DASHBOARD_TRACE_URL={trace_url!r} must contain {{trace_id}}")
        return cls(token=env.get("FRAMEFLOW_DASHBOARD_TOKEN", ""), trace_url=trace_url, interval_s=interval_s)

    @property
    def read_only(self) -> bool:
        return not self.token
