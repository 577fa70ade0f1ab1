"""Bandit allocation from a snapshot's per-variant values (pure; no database).

Every per-variant value in a snapshot carries its standard error (``abstats.engine.snapshot``),
so Thompson sampling serves every metric kind:

- proportion: ``ProportionStats(n=units, successes=round(value * units))``, Beta posteriors;
- every other kind (mean, ratio, error rate, classification measures, AUC, latency quantiles):
  the normal posterior ``N(value, std_error**2)``, passed as ``MeanStats`` whose per-unit
  variance is ``n * std_error**2`` (the approximation the snapshot's interval is built on).

Shares come from ``abstats.stats.thompson_allocation`` (probability of being best, with a floor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from abstats.engine.snapshot import MetricResult
from abstats.stats import MeanStats, ProportionStats, thompson_allocation


def _stats(metric: MetricResult, arm: str) -> ProportionStats | MeanStats | None:
    value = metric.variants.get(arm)
    if value is None or value.value is None or value.units <= 1 or not math.isfinite(value.value):
        return None
    n = value.units
    if metric.kind == "proportion" and 0.0 <= value.value <= 1.0:
        return ProportionStats(n=n, successes=min(n, round(value.value * n)))
    se = value.std_error
    if se is None or not math.isfinite(se):
        return None
    total = value.value * n
    variance = n * se * se  # per-unit variance giving Var(mean) = se**2
    return MeanStats(n=n, sum=total, sum_squares=(n - 1) * variance + total * total / n)


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
