"""CUPED from sufficient statistics (issue 17): the estimator equals a per-unit regression
adjustment, narrows intervals by sqrt(1 - rho^2), and keeps the always-valid level at 100 looks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from abstats.stats import (
    CovariateStats,
    InferenceDesign,
    MeanStats,
    SequentialState,
    compare,
    compare_stratified,
    cuped,
)

RHO = 0.7


def _units(rng: np.random.Generator, n: int, lift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(10.0, 2.0, n)
    noise = rng.normal(0.0, 2.0, n)
    y = 10.0 * (1 + lift) + RHO * (x - 10.0) + math.sqrt(1 - RHO**2) * noise
    return x, y


def _stats(x: np.ndarray, y: np.ndarray) -> CovariateStats:
    return CovariateStats(
        len(x),
        float(y.sum()),
        float((y * y).sum()),
        float(x.sum()),
        float((x * x).sum()),
        float((x * y).sum()),
    )


def test_sufficient_statistics_equal_the_per_unit_adjustment() -> None:
    rng = np.random.default_rng(1)
    (xc, yc), (xt, yt) = _units(rng, 500), _units(rng, 700, 0.02)
    adjusted = cuped([(_stats(xc, yc), _stats(xt, yt))])
    # reference: theta from the within-arm covariances, per-unit adjusted outcomes
    dxc, dxt = xc - xc.mean(), xt - xt.mean()
    theta = float(((dxc * yc).sum() + (dxt * yt).sum()) / ((dxc**2).sum() + (dxt**2).sum()))
    mean_x = float(np.r_[xc, xt].mean())
    assert adjusted.theta == pytest.approx(theta, rel=1e-10)
    (c, t) = adjusted.strata[0]
    ref_c = MeanStats.from_values(yc - theta * (xc - mean_x))
    ref_t = MeanStats.from_values(yt - theta * (xt - mean_x))
    for got, ref in ((c, ref_c), (t, ref_t)):
        assert got.n == ref.n
        assert got.sum == pytest.approx(ref.sum, rel=1e-10)
        assert got.sum_squares == pytest.approx(ref.sum_squares, rel=1e-10)
    assert adjusted.variance_reduction == pytest.approx(RHO**2, abs=0.05)
    # no covariate variation: nothing changes
    flat = cuped([(_stats(np.zeros(5), yc[:5]), _stats(np.zeros(6), yt[:6]))])
    assert flat.theta == 0.0 and flat.variance_reduction == 0.0
    assert flat.strata[0][0].sum == pytest.approx(float(yc[:5].sum()))


def test_interval_width_ratio_is_sqrt_one_minus_rho_squared() -> None:
    rng = np.random.default_rng(2)
    design = InferenceDesign(method="fixed", alpha=0.05, max_units_per_variant=2)
    ratios = []
    for _ in range(20):
        c, t = _stats(*_units(rng, 2000)), _stats(*_units(rng, 2000))
        raw = compare(c.outcome, t.outcome, design=design, relative=False)
        ((ac, at),) = cuped([(c, t)]).strata
        adj = compare(ac, at, design=design, relative=False)
        ratios.append((adj.ci_upper - adj.ci_lower) / (raw.ci_upper - raw.ci_lower))
    assert float(np.mean(ratios)) <= 0.75  # theory sqrt(1 - 0.49) = 0.714
    assert float(np.mean(ratios)) == pytest.approx(math.sqrt(1 - RHO**2), abs=0.02)


def test_a_a_false_positive_rate_at_100_looks_with_two_epochs() -> None:
    """Always valid, continuous monitoring over 100 looks, two weight epochs (CMH), theta
    re-estimated at every look: the A/A false-positive rate stays at most alpha."""
    rng = np.random.default_rng(3)
    design = InferenceDesign(method="always_valid", alpha=0.05, mde_relative=0.02)
    sims, looks, batch = 200, 100, 40
    rejected = 0
    for _ in range(sims):
        cells = [[CovariateStats(), CovariateStats()], [CovariateStats(), CovariateStats()]]
        state: SequentialState | None = None
        for look in range(looks):
            epoch = 0 if look < 30 else 1
            shares = (0.9, 0.1) if epoch == 0 else (0.5, 0.5)
            for arm in (0, 1):
                n = max(int(batch * 2 * shares[arm]), 1)
                cells[epoch][arm] = cells[epoch][arm] + _stats(*_units(rng, n))
            strata = [(c, t) for c, t in cells if c.n and t.n]
            result = compare_stratified(
                cuped(strata).strata, design=design, previous=state, weighting="cmh"
            )
            state = result.state
            if result.significant:
                rejected += 1
                break
    assert rejected / sims <= 0.05, rejected / sims
