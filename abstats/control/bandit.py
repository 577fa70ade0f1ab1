"""Bandit allocation from a snapshot's per-variant values (pure; no database).

The snapshot carries, per variant, the number of units and the metric's value (and, for means, a
confidence interval). From these we rebuild the sufficient statistics Thompson sampling needs:

- proportion / error_rate: ``ProportionStats(n=units, successes=round(value * units))``;
- other kinds: ``MeanStats`` with the variance recovered from the 95% interval's half-width
  (``sd = sqrt(n) * half_width / 1.96``), the normal approximation the interval was built on.

Shares come from ``abstats.stats.thompson_allocation`` (probability of being best, with a floor):
Beta(1 + s, 1 + n - s) posteriors for proportions, normal posteriors for means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from abstats.analysis.snapshot import MetricResult
from abstats.stats import MeanStats, ProportionStats, thompson_allocation

_Z95 = 1.959963984540054


def _stats(metric: MetricResult, arm: str) -> ProportionStats | MeanStats | None:
    value = metric.variants.get(arm)
    if value is None or value.value is None or value.units <= 1 or not math.isfinite(value.value):
        return None
    n = value.units
    if metric.kind in ("proportion", "error_rate") and 0.0 <= value.value <= 1.0:
        return ProportionStats(n=n, successes=min(n, round(value.value * n)))
    if value.ci_lower is None or value.ci_upper is None:
        return None
    sd = math.sqrt(n) * (value.ci_upper - value.ci_lower) / (2 * _Z95)
    total = value.value * n
    return MeanStats(n=n, sum=total, sum_squares=(n - 1) * sd * sd + total * total / n)


def thompson_shares(
    metric: MetricResult, arms: Sequence[str], floor_percent: float, seed: int
) -> dict[str, float] | None:
    """Shares in percent for ``arms``; None when an arm has no usable data yet."""
    stats: dict[str, ProportionStats | MeanStats] = {}
    for arm in arms:
        s = _stats(metric, arm)
        if s is None:
            return None
        stats[arm] = s
    direction: Literal["increase", "decrease"] = (
        "decrease" if metric.direction == "decrease" else "increase"
    )
    rng = np.random.default_rng(seed)
    floor = floor_percent / 100.0
    fractions = thompson_allocation(stats, floor=floor, rng=rng, direction=direction)
    total = sum(fractions.values())
    return {arm: 100.0 * fractions[arm] / total for arm in arms}
