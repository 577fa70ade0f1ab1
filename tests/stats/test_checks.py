"""SRM, drift, multiplicity, gates and Thompson allocation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from abstats.stats import (
    EpochCounts,
    MeanStats,
    ProportionStats,
    benjamini_hochberg,
    binned_ks,
    chi_square_homogeneity,
    drift_check,
    expected_counts,
    flag_drift,
    holm,
    jensen_shannon_distance,
    minimum_sample_gate,
    psi,
    srm_check,
    srm_check_epochs,
    thompson_allocation,
)

# ------------------------------------------------------------------------------------ SRM


def test_expected_counts_follow_the_weight_history() -> None:
    epochs = [
        EpochCounts({"v1": 950, "v2": 50}, {"v1": 95, "v2": 5}),
        EpochCounts({"v1": 760, "v2": 240}, {"v1": 75, "v2": 25}),
        EpochCounts({"v1": 480, "v2": 520}, {"v1": 1, "v2": 1}),
    ]
    assert expected_counts(epochs) == pytest.approx({"v1": 950 + 750 + 500, "v2": 50 + 250 + 500})
    result = srm_check_epochs(epochs, method="chi_square")
    obs = np.array([950 + 760 + 480, 50 + 240 + 520])
    exp = np.array([2200, 800])
    assert result.chi_square == pytest.approx(stats.chisquare(obs, exp).statistic)
    assert result.chi_square_p_value == pytest.approx(stats.chisquare(obs, exp).pvalue)
    assert result.p_value == result.chi_square_p_value
    assert result.threshold == 0.001 and result.mismatch is False
    json_ready = result.to_dict()
    assert json_ready["observed"] == {"v1": 2190, "v2": 810}


def test_pooling_epochs_would_hide_nothing_but_the_sequential_test_uses_each_epoch() -> None:
    # each epoch matches its own weights, while the pooled shares match none of them
    epochs = [
        EpochCounts({"a": 9000, "b": 1000}, {"a": 0.9, "b": 0.1}),
        EpochCounts({"a": 5000, "b": 5000}, {"a": 0.5, "b": 0.5}),
    ]
    assert srm_check_epochs(epochs).mismatch is False
    # a single-epoch check against the last weights would wrongly flag it
    assert srm_check({"a": 14000, "b": 6000}, {"a": 1, "b": 1}).mismatch is True


def test_srm_detects_49_51_at_100k_per_arm() -> None:
    for method in ("sequential", "chi_square"):
        result = srm_check({"c": 98_000, "t": 102_000}, {"c": 50, "t": 50}, method=method)  # type: ignore[arg-type]
        assert result.mismatch is True and result.p_value < 1e-10
        assert "differ" in result.message


def test_sequential_srm_bayes_factor() -> None:
    # Lindon and Malek (2022): BF = B(a + x) / B(a) / prod p^x, a = concentration * p
    x, p, conc = np.array([520.0, 480.0]), np.array([0.5, 0.5]), 1000.0
    a = conc * p
    log_bf = (
        math.lgamma(a.sum()) - math.lgamma(a.sum() + x.sum())
        + sum(math.lgamma(ai + xi) - math.lgamma(ai) for ai, xi in zip(a, x, strict=True))
        - float(x @ np.log(p))
    )  # fmt: skip
    result = srm_check({"a": 520, "b": 480}, {"a": 1, "b": 1})
    assert result.p_value == pytest.approx(min(1.0, math.exp(-log_bf)))
    # running minimum over checks
    assert srm_check({"a": 500, "b": 500}, {"a": 1, "b": 1}, previous_p_value=0.2).p_value == 0.2


def test_srm_edge_cases() -> None:
    empty = srm_check({"a": 0, "b": 0}, {"a": 1, "b": 1})
    assert empty.status == "not_enough_data" and not empty.mismatch
    assert empty.to_dict()["p_value"] is None
    single = srm_check({"a": 10}, {"a": 1})
    assert single.status == "not_enough_data"
    # units in a variant with no weight are a mismatch by definition
    for method in ("sequential", "chi_square"):
        zero = srm_check({"a": 100, "b": 3}, {"a": 1, "b": 0}, method=method)  # type: ignore[arg-type]
        assert zero.mismatch and zero.p_value == 0.0
    # an epoch without units contributes nothing
    epochs = [EpochCounts({"a": 0, "b": 0}, {"a": 1, "b": 1}), EpochCounts({"a": 50, "b": 50}, {"a": 1, "b": 1})]  # fmt: skip
    assert srm_check_epochs(epochs).p_value == 1.0
    with pytest.raises(ValueError, match="method"):
        srm_check({"a": 1, "b": 1}, {"a": 1, "b": 1}, method="g_test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        srm_check({"a": 1, "b": 1}, {"a": 1, "b": 1}, threshold=2.0)
    with pytest.raises(ValueError, match="weights"):
        srm_check({"a": 1, "b": 1}, {"a": -1, "b": 1})


def test_sequential_srm_false_alarms_stay_under_one_percent_over_many_checks() -> None:
    """400 A/A experiments checked every 10,000 units up to 100,000 (the full 1,000-check version
    is in tests/perf/simulate_sequential.py)."""
    rng = np.random.default_rng(11)
    alarms = 0
    sims, checks = 400, 200
    counts = np.cumsum(rng.binomial(500, 0.5, size=(sims, checks)), axis=1)
    for s in range(sims):
        previous = None
        for k in range(19, checks, 20):  # every 20th check through the real function
            total = 500 * (k + 1)
            result = srm_check({"a": int(counts[s, k]), "b": int(total - counts[s, k])}, {"a": 1, "b": 1}, previous_p_value=previous)  # fmt: skip
            previous = result.p_value
        alarms += previous is not None and previous <= 0.01
    rate = alarms / sims
    assert rate <= 0.01 + 2 * math.sqrt(0.01 * 0.99 / sims)


# ---------------------------------------------------------------------------------- drift


def test_drift_measures() -> None:
    ref = [100, 200, 400, 200, 100]
    same = [50, 100, 200, 100, 50]
    shifted = [10, 50, 200, 400, 340]
    assert psi(ref, same) == pytest.approx(0.0, abs=1e-3)
    assert psi(ref, shifted) > 0.5
    # PSI is the symmetrised KL divergence of the smoothed shares
    r = (np.array(ref) + 0.5) / (1000 + 2.5)
    c = (np.array(shifted) + 0.5) / (1000 + 2.5)
    assert psi(ref, shifted) == pytest.approx(float(np.sum((c - r) * np.log(c / r))))
    assert jensen_shannon_distance(ref, same) == pytest.approx(0.0, abs=1e-7)
    assert 0 < jensen_shannon_distance(ref, shifted) < 1
    assert jensen_shannon_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    chi2, p = chi_square_homogeneity(ref, shifted)
    expected = stats.chi2_contingency(np.array([ref, shifted]), correction=False)
    assert (chi2, p) == pytest.approx((expected.statistic, expected.pvalue))
    assert chi_square_homogeneity([5, 0], [7, 0]) == (0.0, 1.0)
    d, p_ks = binned_ks(ref, shifted)
    assert d == pytest.approx(np.max(np.abs(np.cumsum(ref) / 1000 - np.cumsum(shifted) / 1000)))
    assert p_ks < 1e-6
    for f in (psi, jensen_shannon_distance):
        assert math.isnan(f([0, 0], [1, 2]))  # type: ignore[operator]
    assert all(math.isnan(v) for v in chi_square_homogeneity([1, 2], [0, 0]))
    assert all(math.isnan(v) for v in binned_ks([1, 2], [0, 0]))
    with pytest.raises(ValueError, match="same non-zero"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=">= 0"):
        psi([1, -2], [1, 2])


def test_binned_ks_is_conservative_for_binned_data() -> None:
    rng = np.random.default_rng(6)
    edges = np.linspace(-4, 4, 21)
    rejections = 0
    for _ in range(300):
        a = np.histogram(rng.normal(size=400), edges)[0]
        b = np.histogram(rng.normal(size=300), edges)[0]
        rejections += binned_ks(a, b)[1] <= 0.05
    assert rejections / 300 <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 300)


def test_drift_needs_effect_size_and_significance() -> None:
    big_n_small_shift = drift_check([10_000, 20_000, 10_000], [10_600, 20_000, 9_400])
    assert big_n_small_shift.p_value < 1e-6
    assert big_n_small_shift.effect_exceeded is False and big_n_small_shift.drifted is False
    small_n_big_shift = drift_check([3, 2, 1], [1, 2, 3])
    assert small_n_big_shift.effect_exceeded is True
    assert small_n_big_shift.drifted is False
    real = drift_check([100, 200, 400, 200, 100], [10, 50, 200, 400, 340])
    assert real.drifted is True and "PSI" in real.message
    empty = drift_check([0, 0], [1, 2])
    assert empty.status == "not_enough_data" and not empty.drifted
    assert "reference" in empty.message
    assert drift_check([1, 2], [0, 0]).message == "no current counts"


def test_flag_drift_applies_benjamini_hochberg() -> None:
    results = [
        drift_check([100, 200, 400, 200, 100], [10, 50, 200, 400, 340]),
        drift_check([30, 30, 30], [20, 30, 42]),
        drift_check([0, 0], [1, 1]),
    ]
    flagged = flag_drift(results, alpha=0.05)
    assert flagged[2] is results[2]
    raw = [results[0].p_value, results[1].p_value]
    assert [flagged[0].p_value_adjusted, flagged[1].p_value_adjusted] == pytest.approx(
        benjamini_hochberg(raw)
    )
    assert flagged[0].drifted is True
    assert flagged[1].drifted is (
        flagged[1].effect_exceeded and flagged[1].p_value_adjusted <= 0.05
    )


# --------------------------------------------------------------------------- multiplicity


def test_multiplicity_skips_missing_p_values() -> None:
    adjusted = holm([0.01, None, 0.04, math.nan])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1]) and math.isnan(adjusted[3])
    assert benjamini_hochberg([]) == []
    with pytest.raises(ValueError):
        holm([1.5])


# ---------------------------------------------------------------------------------- gates


def test_minimum_sample_gate() -> None:
    ok = minimum_sample_gate(
        units={"a": 600, "b": 700}, min_units=500, events={"a": 60, "b": 55}, min_events=50,
        runtime_seconds=7200, min_runtime_seconds=3600,
    )  # fmt: skip
    assert ok.passed and ok.status == "ok" and ok.shortfalls == {}
    short = minimum_sample_gate(
        units={"a": 600, "b": 420}, min_units=500, events={"a": 60}, min_events=50,
        runtime_seconds=600, min_runtime_seconds=3600,
    )  # fmt: skip
    assert not short.passed and short.status == "not_enough_data"
    assert short.shortfalls == {"units:b": 80, "events:b": 50, "runtime": 3000}
    assert "runtime needs 3000 more s" in short.message
    assert minimum_sample_gate(units={}, min_units=10).shortfalls == {"units": 10}


# ------------------------------------------------------------------------------- bandit


def test_thompson_allocation_with_floor() -> None:
    rng = np.random.default_rng(0)
    stats_by_variant = {
        "a": ProportionStats(1000, 100),
        "b": ProportionStats(1000, 160),
        "c": ProportionStats(10, 1),
    }
    shares = thompson_allocation(stats_by_variant, floor=0.1, draws=20_000, rng=rng)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert min(shares.values()) >= 0.1 - 1e-12
    assert shares["b"] == max(shares.values())
    # P(best) of a vs b under Beta posteriors, computed by numerical integration
    a = stats.beta(101, 901)
    b = stats.beta(161, 841)
    grid = np.linspace(0.05, 0.25, 20001)
    p_a_beats_b = float(np.sum(a.pdf(grid) * b.cdf(grid)) * (grid[1] - grid[0]))
    assert p_a_beats_b < 1e-4
    lower = thompson_allocation(stats_by_variant, draws=20_000, rng=rng, direction="decrease")
    assert lower["a"] > lower["b"]


def test_thompson_allocation_means() -> None:
    rng = np.random.default_rng(1)
    shares = thompson_allocation(
        {"a": MeanStats.from_values(rng.normal(10, 2, 500)),
         "b": MeanStats.from_values(rng.normal(10, 2, 500)),
         "new": MeanStats()},
        draws=4000, rng=rng,
    )  # fmt: skip
    assert shares["new"] > 0.2  # an arm without data is uncertain, not ignored
    assert thompson_allocation({}, floor=0.1) == {}
    with pytest.raises(ValueError, match="floor"):
        thompson_allocation({"a": ProportionStats(1, 1), "b": ProportionStats(1, 1)}, floor=0.6)
    with pytest.raises(ValueError, match="draws"):
        thompson_allocation({"a": ProportionStats(1, 1)}, draws=0)
    with pytest.raises(ValueError, match="all"):
        thompson_allocation({"a": ProportionStats(1, 1), "b": MeanStats()})
    only_one = thompson_allocation({"x": MeanStats.from_values([1.0])}, draws=10)
    assert only_one == {"x": 1.0}
