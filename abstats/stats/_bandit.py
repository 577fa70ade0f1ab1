"""Thompson-sampling allocation for bandit mode (allocation only: inference on bandit data uses
the stratified / IPW estimators of :func:`abstats.stats.compare_stratified`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from abstats.stats._sufficient import MeanStats, ProportionStats


def thompson_allocation(
    stats_by_variant: Mapping[str, ProportionStats | MeanStats],
    *,
    floor: float = 0.0,
    draws: int = 10_000,
    rng: np.random.Generator | None = None,
    direction: Literal["increase", "decrease"] = "increase",
) -> dict[str, float]:
    """Traffic shares proportional to the posterior probability of being best, with a floor.

    Proportions: ``Beta(1 + successes, 1 + failures)`` posteriors (uniform prior; Thompson 1933,
    Chapelle and Li 2011). Means: the normal approximation ``N(mean, variance / n)``; a variant
    with fewer than 2 units gets the pooled mean and the pooled per-unit variance, i.e. as
    uncertain as one unit. ``P(best)`` is estimated from ``draws`` joint posterior draws; the
    shares are ``floor + (1 - k floor) P(best)``, so every variant keeps at least ``floor``.

    Parameters
    ----------
    stats_by_variant : mapping of variant to ProportionStats or MeanStats (all one type)
    floor : float
        Minimum share per variant, in ``[0, 1/k]`` (a policy's ``"floor": 10`` is 0.10).
    draws : int
    rng : numpy Generator or None
        Seed it for reproducible allocations.
    direction : {"increase", "decrease"}
        Whether higher or lower is better.

    Returns
    -------
    dict
        Shares summing to 1.
    """
    names = list(stats_by_variant)
    k = len(names)
    if k == 0:
        return {}
    if not 0 <= floor * k <= 1:
        raise ValueError(f"floor must be in [0, 1/{k}]")
    if draws < 1:
        raise ValueError("draws must be >= 1")
    rng = rng or np.random.default_rng()
    values = list(stats_by_variant.values())
    samples = np.empty((draws, k))
    if all(isinstance(v, ProportionStats) for v in values):
        for j, v in enumerate(values):
            assert isinstance(v, ProportionStats)
            samples[:, j] = rng.beta(1 + v.successes, 1 + v.n - v.successes, size=draws)
    elif all(isinstance(v, MeanStats) for v in values):
        pooled = MeanStats()
        for v in values:
            assert isinstance(v, MeanStats)
            pooled = pooled + v
        pooled_mean = pooled.mean if pooled.n > 0 else 0.0
        pooled_variance = pooled.variance if pooled.n >= 2 and pooled.variance > 0 else 1.0
        for j, v in enumerate(values):
            assert isinstance(v, MeanStats)
            if v.n >= 2:
                mean, sd = v.mean, float(np.sqrt(v.variance / v.n))
            else:
                mean, sd = pooled_mean, float(np.sqrt(pooled_variance))
            samples[:, j] = rng.normal(mean, sd, size=draws)
    else:
        raise ValueError("all variants need ProportionStats, or all MeanStats")
    best = samples.argmax(axis=1) if direction == "increase" else samples.argmin(axis=1)
    p_best = np.bincount(best, minlength=k) / draws
    shares = floor + (1 - k * floor) * p_best
    return {name: float(share) for name, share in zip(names, shares, strict=True)}
