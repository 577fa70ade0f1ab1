"""One arm's estimate with its standard error and 95% interval, for every kind of sufficient
statistic: what a report shows per variant and what a bandit or a sample-size estimate needs.

- ``ProportionStats``: ``p``, binomial SE ``sqrt(p (1-p) / n)``, Wilson (1927) interval.
- ``MeanStats``: the mean, ``sd / sqrt(n)``, normal interval.
- ``RatioStats`` (ratios, request-level measures clustered by unit, classification measures,
  log loss): the ratio of sums, delta-method SE (Deng, Knoblich and Lu 2018, eq. 3).
- ``BinnedScores``: AUC with DeLong's (1988) variance.
- ``ClusteredHistogram``: a quantile with the clustered Woodruff (1952) interval.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from abstats.stats._classification import auc_delong
from abstats.stats._compare import ArmStats
from abstats.stats._quantile import clustered_quantile
from abstats.stats._sufficient import (
    BinnedScores,
    ClusteredHistogram,
    MeanStats,
    ProportionStats,
    RatioStats,
)
from abstats.stats._tests import wilson_interval

_Z95 = 1.959963984540054


class Estimate(NamedTuple):
    """``value`` with ``std_error`` and a 95% interval; NaN where it cannot be computed."""

    value: float
    std_error: float
    ci_lower: float
    ci_upper: float
    units: int
    events: int  # what the estimate counts: successes, units with a value, requests, labels


def _normal(value: float, se: float, units: int, events: int) -> Estimate:
    if not (math.isfinite(value) and math.isfinite(se)):
        return Estimate(value, math.nan, math.nan, math.nan, units, events)
    return Estimate(value, se, value - _Z95 * se, value + _Z95 * se, units, events)


def estimate(stats: ArmStats, *, quantile: float | None = None) -> Estimate:
    """The arm's estimate (see module docstring); ``quantile`` for ``ClusteredHistogram``."""
    if isinstance(stats, ProportionStats):
        n, s = stats.n, stats.successes
        if n <= 0:
            return Estimate(math.nan, math.nan, math.nan, math.nan, 0, 0)
        p = s / n
        lo, hi = wilson_interval(s, n)
        return Estimate(p, math.sqrt(p * (1 - p) / n), lo, hi, n, s)
    if isinstance(stats, MeanStats):
        se = math.sqrt(stats.variance / stats.n) if stats.n >= 2 else math.nan
        return _normal(stats.mean, se, stats.n, stats.n)
    if isinstance(stats, RatioStats):
        variance = stats.variance_of_ratio
        se = math.sqrt(variance) if math.isfinite(variance) else math.nan
        return _normal(stats.ratio, se, stats.n, int(stats.denominator_sum))
    if isinstance(stats, BinnedScores):
        labels = sum(stats.positives) + sum(stats.negatives)
        if sum(stats.positives) == 0 or sum(stats.negatives) == 0:
            return Estimate(math.nan, math.nan, math.nan, math.nan, stats.n_units, labels)
        auc = auc_delong(stats)
        return _normal(auc.auc, math.sqrt(max(auc.variance, 0.0)), stats.n_units, labels)
    if isinstance(stats, ClusteredHistogram):
        if stats.requests == 0:
            return Estimate(math.nan, math.nan, math.nan, math.nan, stats.units, 0)
        q = clustered_quantile(stats, 0.5 if quantile is None else quantile)
        return Estimate(
            q.estimate, q.standard_error, q.ci_lower, q.ci_upper, stats.units, stats.requests
        )
    raise TypeError(f"no estimate for {type(stats).__name__}")
