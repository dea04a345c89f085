"""Figures of several runs: medians with min-max, and ratios of paired runs."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

#: Per contender, per run: metric name -> value.
Runs = dict[str, list[dict[str, float]]]


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))


def with_through(figures: dict[str, float]) -> dict[str, float]:
    """Adds ``through``: messages in and out one after the other, ``1 / (1/send + 1/complete)``."""
    send, complete = figures.get("send"), figures.get("complete")
    if send and complete:
        return {**figures, "through": 1 / (1 / send + 1 / complete)}
    return figures


def spread(runs: Runs, contender: str, metric: str) -> Spread | None:
    values = [figures[metric] for figures in runs.get(contender, []) if metric in figures]
    return Spread.of(values) if values else None


def ratio(runs: Runs, numerator: tuple[str, str], denominator: tuple[str, str]) -> Spread | None:
    """The ratio of two figures, run by run (contenders alternate, so run ``i`` of each
    shared the machine's state of that moment), as median and min-max."""
    tops = [figures.get(numerator[1]) for figures in runs.get(numerator[0], [])]
    bottoms = [figures.get(denominator[1]) for figures in runs.get(denominator[0], [])]
    values = [top / bottom for top, bottom in zip(tops, bottoms, strict=False) if top and bottom]
    return Spread.of(values) if values else None
