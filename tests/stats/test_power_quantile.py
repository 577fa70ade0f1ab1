"""Power of sequential designs, and clustered quantiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from abstats.stats import (
    BinnedScores,
    ClusteredHistogram,
    InferenceDesign,
    always_valid_p_value,
    auc_difference_test,
    clustered_quantile,
    crossing_probability,
    fixed_power,
    log_spaced_bin_edges,
    mixing_grid,
    required_units_per_arm,
    sample_size_per_arm,
    sequential_power,
    spending_boundaries,
    tuned_mixing_variance,
)

# ---------------------------------------------------------------------------------- power


def test_required_units_round_up_and_deliver_the_power() -> None:
    n = required_units_per_arm(0.1, 0.1, power=0.8)
    assert n == math.ceil(sample_size_per_arm(0.1, 0.1, power=0.8))
    assert fixed_power(0.1, 0.1, n) >= 0.8 > fixed_power(0.1, 0.1, n - 50)
    absolute = required_units_per_arm(0.1, 0.01, relative=False)
    assert absolute == n
    with pytest.raises(ValueError, match="sd"):
        required_units_per_arm(10, 0.1, kind="mean")
    with pytest.raises(ValueError, match="between 0 and 1"):
        required_units_per_arm(0.95, 0.1)
    with pytest.raises(ValueError, match="kind"):
        required_units_per_arm(0.1, 0.1, kind="ratio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-zero"):
        sample_size_per_arm(10, 0.0, kind="mean", sd=1)
    with pytest.raises(ValueError, match="power"):
        sample_size_per_arm(0.1, 0.1, power=1.0)


def test_sequential_power_of_the_fixed_design_is_fixed_power() -> None:
    design = InferenceDesign("fixed", max_units_per_variant=20_000)
    # the unpooled planning variance: compare with the same z at the exact drift
    se = math.sqrt((0.11 * 0.89 + 0.1 * 0.9) / 20_000)
    expected = stats.norm.sf(1.959963984540054 - 0.01 / se) + stats.norm.cdf(-1.959963984540054 - 0.01 / se)  # fmt: skip
    assert sequential_power(design, baseline=0.1, mde=0.01, relative=False) == pytest.approx(
        expected
    )
    one_sided = sequential_power(design, baseline=0.1, mde=0.01, relative=False, alternative="greater")  # fmt: skip
    assert one_sided == pytest.approx(stats.norm.sf(1.6448536269514722 - 0.01 / se))


def test_group_sequential_power_by_integration() -> None:
    design = InferenceDesign("group_sequential", max_units_per_variant=20_000)
    power = sequential_power(design, baseline=0.1, mde=0.1, looks=5)
    looks = [0.2, 0.4, 0.6, 0.8, 1.0]
    # relative effects are tested on log(t / c)
    se = math.sqrt((0.11 * 0.89 / 0.11**2 + 0.1 * 0.9 / 0.1**2) / 20_000)
    expected = crossing_probability(spending_boundaries(looks, 0.05), looks, drift=math.log(1.1) / se)  # fmt: skip
    assert power == pytest.approx(expected)
    fixed = sequential_power(InferenceDesign("fixed", max_units_per_variant=20_000), baseline=0.1, mde=0.1)  # fmt: skip
    assert 0.95 * fixed < power < fixed
    # looks at a different scale of the horizon, with thinning
    assert sequential_power(design, baseline=0.1, mde=0.1, looks=[0.1, 0.105, 0.5, 1.0], units_per_arm=40_000) > power  # fmt: skip


def test_always_valid_power() -> None:
    horizon = InferenceDesign("always_valid", max_units_per_variant=20_000)
    plain = InferenceDesign(
        "always_valid", max_units_per_variant=20_000, calibrate_to_horizon=False
    )
    by_mde = InferenceDesign("always_valid", mde_relative=0.1)
    fixed = sequential_power(InferenceDesign("fixed", max_units_per_variant=20_000), baseline=0.1, mde=0.1)  # fmt: skip
    calibrated = sequential_power(horizon, baseline=0.1, mde=0.1, looks=100)
    uncalibrated = sequential_power(plain, baseline=0.1, mde=0.1, looks=100)
    mde_tuned = sequential_power(by_mde, baseline=0.1, mde=0.1, looks=100, units_per_arm=20_000)
    assert calibrated >= 0.75 * fixed  # the target
    assert uncalibrated < calibrated
    assert mde_tuned == pytest.approx(uncalibrated, abs=0.02)  # both tightest near the horizon
    one_sided = sequential_power(plain, baseline=0.1, mde=0.1, looks=20, alternative="greater")
    assert one_sided > sequential_power(plain, baseline=0.1, mde=0.1, looks=20)
    mean_power = sequential_power(by_mde, baseline=10, mde=0.15, kind="mean", sd=5, looks=20, units_per_arm=20_000, relative=False)  # fmt: skip
    assert 0.1 < mean_power < 0.9
    # looking past the horizon adds nothing
    assert sequential_power(horizon, baseline=0.1, mde=0.1, looks=[0.5, 1.0, 1.5]) == pytest.approx(
        sequential_power(horizon, baseline=0.1, mde=0.1, looks=[0.5, 1.0])
    )
    with pytest.raises(ValueError, match="units_per_arm"):
        sequential_power(by_mde, baseline=0.1, mde=0.1)
    with pytest.raises(ValueError, match="looks"):
        sequential_power(horizon, baseline=0.1, mde=0.1, looks=0)
    with pytest.raises(ValueError, match="look"):
        sequential_power(horizon, baseline=0.1, mde=0.1, looks=[])


def test_always_valid_power_without_horizon_matches_the_grid_mixture_test() -> None:
    """The planner's power of the MDE-tuned test is that of the test compare runs (the grid
    mixture above the tuned tau^2), checked by simulating its p-values at 20 looks; the single
    mixture's power (0.584 here) is 4-5 standard errors away."""
    design = InferenceDesign("always_valid", mde_relative=0.05)
    power = sequential_power(design, baseline=0.1, mde=0.1, units_per_arm=20_000, looks=20)
    effect = math.log(1.1)
    var_n = (0.9 / 0.1 + 0.89 / 0.11) / 20_000  # of log(t / c) at 20,000 units per arm
    grid = mixing_grid(tuned_mixing_variance(alpha=0.05, mde=math.log1p(0.05)))
    rng = np.random.default_rng(5)
    runs, hits = 4000, 0
    fractions = np.arange(1, 21) / 20
    for _ in range(runs):
        brownian = np.cumsum(rng.normal(0.0, math.sqrt(1 / 20), 20))
        for s, w in zip(fractions, brownian, strict=True):
            estimate = effect + math.sqrt(var_n) * w / s  # N(effect, var_n / s)
            if always_valid_p_value(estimate, var_n / s, mixing_variance=grid) <= 0.05:
                hits += 1
                break
    se = math.sqrt(power * (1 - power) / runs)
    assert hits / runs == pytest.approx(power, abs=3 * se)


# ------------------------------------------------------------------------------ quantiles


def clustered_units(rng: np.random.Generator, units: int) -> tuple[np.ndarray, np.ndarray]:
    """Latencies with a per-unit level (requests of one unit are correlated): (unit, value)."""
    levels = rng.normal(0.0, 0.6, units)
    sizes = rng.integers(1, 15, units)
    unit = np.repeat(np.arange(units), sizes)
    return unit, rng.lognormal(3.0 + levels[unit], 0.3)


def test_clustered_quantile_estimate_and_interval() -> None:
    rng = np.random.default_rng(12)
    edges = log_spaced_bin_edges()
    unit, values = clustered_units(rng, 3000)
    h = ClusteredHistogram.from_unit_index(unit, values, edges)
    units = [values[unit == u] for u in range(3000)]
    assert ClusteredHistogram.from_unit_values(units, edges) == h
    q = clustered_quantile(h, 0.95)
    exact = np.quantile(values, 0.95)
    assert q.estimate == pytest.approx(exact, rel=0.03)  # bins are 4.7 % wide
    assert q.ci_lower < q.estimate < q.ci_upper
    assert q.standard_error > 0
    # the CDF's standard error: delta method on per-unit counts below the estimate
    below = np.bincount(unit, weights=values <= q.estimate, minlength=3000)
    sizes = np.bincount(unit, minlength=3000).astype(float)
    f = below.sum() / sizes.sum()
    direct = np.var(below - f * sizes, ddof=1) / (3000 * sizes.mean() ** 2)
    assert q.cdf_standard_error == pytest.approx(math.sqrt(direct), rel=0.1)
    with pytest.raises(ValueError, match="quantile"):
        clustered_quantile(h, 1.0)
    assert math.isnan(clustered_quantile(ClusteredHistogram.empty(edges), 0.5).estimate)


def test_clustered_quantile_interval_covers_under_clustering() -> None:
    """Coverage of the 95 % interval for the p90 of a clustered population, with the naive
    (independent requests) interval for contrast."""
    rng = np.random.default_rng(13)
    edges = log_spaced_bin_edges()
    truth = np.quantile(clustered_units(np.random.default_rng(99), 100_000)[1], 0.9)
    covered = naive_covered = 0
    reps = 200
    for _ in range(reps):
        h = ClusteredHistogram.from_unit_index(*clustered_units(rng, 600), edges)
        q = clustered_quantile(h, 0.9)
        covered += q.ci_lower <= truth <= q.ci_upper
        # the same interval with the binomial CDF variance of independent requests
        naive_se = math.sqrt(0.9 * 0.1 / h.requests) / q.cdf_standard_error * q.standard_error
        naive_covered += abs(q.estimate - truth) <= 1.96 * naive_se
    assert covered / reps >= 0.95 - 2 * math.sqrt(0.95 * 0.05 / reps)
    assert naive_covered / reps < 0.85


def test_quantile_in_open_top_bin() -> None:
    edges = [0.0, 10.0, math.inf]
    h = ClusteredHistogram.from_unit_values([[5.0, 20.0, 30.0], [40.0, 50.0]], edges)
    assert math.isinf(clustered_quantile(h, 0.9).estimate)
    assert clustered_quantile(h, 0.2).estimate == pytest.approx(10.0)


def test_auc_difference_test() -> None:
    c = BinnedScores((50, 40, 30, 20, 10), (10, 20, 30, 40, 50))
    t = BinnedScores((55, 45, 30, 15, 5), (5, 15, 30, 45, 55))
    diff, _se, p, low, high = auc_difference_test(c, t)
    assert diff < 0 and p < 0.05 and low < diff < high
    _, _, p_less, low_less, high_less = auc_difference_test(c, t, alternative="less")
    assert p_less == pytest.approx(p / 2) and math.isinf(low_less) and high_less < 0
    _, _, p_greater, _low_greater, high_greater = auc_difference_test(c, t, alternative="greater")
    assert p_greater == pytest.approx(1 - p / 2) and math.isinf(high_greater)
    empty = BinnedScores((0, 0), (0, 0))
    assert math.isnan(auc_difference_test(empty, t)[2])
