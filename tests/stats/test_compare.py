"""compare / compare_stratified: estimators, statuses, designs, state and serialisation."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from abstats.stats import (
    BinnedScores,
    ClusteredHistogram,
    ComparisonResult,
    InferenceDesign,
    MeanStats,
    ProportionStats,
    RatioStats,
    SequentialState,
    agresti_caffo_test,
    auc_difference_test,
    clustered_quantile,
    compare,
    compare_stratified,
    log_spaced_bin_edges,
    newcombe_interval,
    spending_boundaries,
    welch_t_test,
)

FIXED = InferenceDesign("fixed")
ALWAYS = InferenceDesign("always_valid", mde_relative=0.05)
HORIZON = InferenceDesign("always_valid", max_units_per_variant=20_000)
GROUP = InferenceDesign("group_sequential", max_units_per_variant=20_000)


def assert_json(result: ComparisonResult) -> dict[str, object]:
    data = result.to_dict()
    json.dumps(data, allow_nan=False)  # no NaN or infinity may leak out
    return data


# ---------------------------------------------------------------------- the boundary case


@pytest.mark.parametrize("design", [FIXED, ALWAYS, HORIZON, GROUP], ids=lambda d: d.method)
def test_zero_errors_in_15000_calls_prove_non_inferiority_at_one_point(
    design: InferenceDesign,
) -> None:
    """docs/statistics.md: boundary data is not missing data."""
    clean = ProportionStats(15_000, 0)
    result = compare(
        clean,
        clean,
        design=design,
        alternative="less",  # an error rate: lower is better
        relative=False,
        margin=0.01,
        margin_relative=False,
    )
    assert result.status == "ok"
    assert result.non_inferior is True
    assert result.non_inferiority_p_value is not None
    assert result.non_inferiority_p_value < 1e-6
    assert result.significant is False  # no difference, no win
    assert 0 < result.ci_upper < 0.001
    assert_json(result)


def test_clean_error_rate_as_clustered_ratio_also_passes() -> None:
    # 3,000 units with 5 calls each, no errors: the ratio's delta-method variance is 0, the
    # effective-count Agresti-Caffo variance is not
    clean = RatioStats.from_values(np.zeros(3000), np.full(3000, 5.0), is_proportion=True)
    result = compare(
        clean, clean, design=ALWAYS, alternative="less", relative=False,
        margin=0.01, margin_relative=False,
    )  # fmt: skip
    assert result.status == "ok" and result.non_inferior is True


def test_a_relative_margin_cannot_be_met_at_zero() -> None:
    clean = ProportionStats(15_000, 0)
    result = compare(clean, clean, design=FIXED, alternative="less", margin=0.01)
    assert result.status == "degenerate"
    assert result.non_inferior is None
    assert "relative" in result.message
    assert result.significant is False


def test_a_real_breach_is_not_non_inferior() -> None:
    result = compare(
        ProportionStats(15_000, 30),
        ProportionStats(15_000, 400),
        design=FIXED,
        alternative="less",
        relative=False,
        margin=0.01,
        margin_relative=False,
    )
    assert result.non_inferior is False
    assert result.absolute_effect > 0.02


# ------------------------------------------------------------------------- fixed design


def test_fixed_absolute_proportions_use_newcombe() -> None:
    c, t = ProportionStats(1000, 100), ProportionStats(1000, 130)
    result = compare(c, t, design=FIXED, relative=False)
    assert result.test == "newcombe"
    assert (result.ci_lower, result.ci_upper) == pytest.approx(newcombe_interval(c, t))
    # the p-value inverts the interval: at alpha = p the interval touches 0
    low, _ = newcombe_interval(c, t, alpha=result.p_value)
    assert low == pytest.approx(0.0, abs=1e-10)
    assert result.significant == (result.p_value <= 0.05)


def test_fixed_absolute_means_use_welch() -> None:
    rng = np.random.default_rng(1)
    c = MeanStats.from_values(rng.normal(10, 3, 200))
    t = MeanStats.from_values(rng.normal(11, 4, 150))
    result = compare(c, t, design=FIXED, relative=False)
    expected = welch_t_test(c, t)
    assert result.test == "welch"
    assert result.p_value == pytest.approx(expected.p_value, rel=1e-12)
    assert (result.ci_lower, result.ci_upper) == pytest.approx(
        (expected.ci_lower, expected.ci_upper), rel=1e-12
    )


def test_relative_effect_is_tested_on_the_log_ratio() -> None:
    c = MeanStats.from_values(np.arange(100.0))
    t = MeanStats.from_values(np.arange(100.0) * 1.1)
    result = compare(c, t, design=FIXED)
    vc, vt = c.variance / c.n, t.variance / t.n
    se_log = math.sqrt(vt / t.mean**2 + vc / c.mean**2)
    z = 1.959963984540054
    assert result.test == "log_ratio"
    assert result.relative_effect == pytest.approx(0.1)
    # the reported standard error is the lift's (delta method), (t / c) se_log
    assert result.standard_error == pytest.approx(
        math.sqrt(vt / c.mean**2 + t.mean**2 * vc / c.mean**4)
    )
    assert result.p_value == pytest.approx(2 * stats.norm.sf(math.log(1.1) / se_log))
    assert result.ci_lower == pytest.approx(math.expm1(math.log(1.1) - z * se_log))
    assert result.ci_upper == pytest.approx(math.expm1(math.log(1.1) + z * se_log))
    one_sided = compare(c, t, design=FIXED, alternative="less")
    assert one_sided.ci_lower == -1.0  # the open end of a relative decrease


def test_relative_effect_of_a_negative_estimate_uses_the_delta_method() -> None:
    c = MeanStats.from_values(np.arange(100.0))
    t = MeanStats.from_values(np.arange(100.0) - 60.0)  # mean below 0
    result = compare(c, t, design=FIXED)
    vc, vt = c.variance / c.n, t.variance / t.n
    se = math.sqrt(vt / c.mean**2 + t.mean**2 * vc / c.mean**4)
    assert result.test == "delta_method"
    assert result.standard_error == pytest.approx(se)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(result.relative_effect) / se))


@pytest.mark.parametrize("alternative", ["greater", "less"])
def test_one_sided_intervals_are_open_on_one_side(alternative: str) -> None:
    c, t = ProportionStats(5000, 500), ProportionStats(5000, 560)
    result = compare(c, t, design=FIXED, alternative=alternative, relative=False)
    data = assert_json(result)
    if alternative == "greater":
        assert math.isinf(result.ci_upper) and data["ci_upper"] is None
        assert result.significant
    else:
        assert math.isinf(result.ci_lower) and data["ci_lower"] is None
        assert not result.significant and result.p_value > 0.5


def test_fixed_design_waits_for_the_horizon() -> None:
    design = InferenceDesign("fixed", max_units_per_variant=10_000)
    early = compare(ProportionStats(5000, 100), ProportionStats(5000, 300), design=design)
    assert early.status == "before_horizon"
    assert early.significant is False
    assert early.p_value < 1e-6  # reported, but not a decision
    late = compare(ProportionStats(10_000, 200), ProportionStats(10_000, 600), design=design)
    assert late.status == "ok" and late.significant


def test_non_inferiority_p_value_matches_a_shifted_null() -> None:
    rng = np.random.default_rng(2)
    c = MeanStats.from_values(rng.normal(100, 10, 400))
    t = MeanStats.from_values(rng.normal(99.5, 10, 400))
    result = compare(
        c, t, design=FIXED, alternative="greater", relative=False, margin=3.0,
        margin_relative=False,
    )  # fmt: skip
    shifted = welch_t_test(MeanStats(c.n, c.sum - 3.0 * c.n, c.sum_squares - 6.0 * c.sum + 9.0 * c.n), t, alternative="greater")  # fmt: skip
    assert result.non_inferiority_p_value == pytest.approx(shifted.p_value, rel=1e-9)
    assert result.non_inferior is True


def test_non_inferiority_on_proportions_agrees_with_agresti_caffo() -> None:
    c, t = ProportionStats(4000, 400), ProportionStats(4000, 380)
    fixed = compare(
        c, t, design=FIXED, alternative="greater", relative=False, margin=0.02,
        margin_relative=False,
    )  # fmt: skip
    ac = agresti_caffo_test(c, t, value=-0.02, alternative="greater")
    assert fixed.non_inferior is True
    assert fixed.non_inferiority_p_value == pytest.approx(ac.p_value, rel=0.2)  # Newcombe vs AC


# ---------------------------------------------------------------------- statuses and guards


def test_empty_and_tiny_inputs_are_not_enough_data() -> None:
    for c, t in [
        (ProportionStats(), ProportionStats()),
        (MeanStats(), MeanStats.from_values([1.0, 2.0])),
        (MeanStats.from_values([1.0]), MeanStats.from_values([1.0, 2.0])),
        (RatioStats(), RatioStats()),
        (RatioStats.from_values([0, 0], [0, 0]), RatioStats.from_values([1, 2], [3, 4])),
        (BinnedScores((0, 0), (0, 0)), BinnedScores((1, 2), (3, 0))),
    ]:
        result = compare(c, t, design=ALWAYS)
        assert result.status == "not_enough_data", (c, t)
        assert result.significant is False and result.non_inferior is None
        assert_json(result)


def test_policy_minimum_units_gate() -> None:
    design = InferenceDesign("always_valid", mde_relative=0.05, min_units_per_variant=500)
    result = compare(ProportionStats(499, 10), ProportionStats(800, 500), design=design)
    assert result.status == "not_enough_data"
    assert "500" in result.message


def test_constant_values_are_degenerate_not_a_win() -> None:
    c = MeanStats.from_values([5.0] * 100)
    t = MeanStats.from_values([6.0] * 100)
    result = compare(c, t, design=FIXED, relative=False)
    assert result.status == "degenerate"
    assert result.significant is False
    assert result.absolute_effect == pytest.approx(1.0)


def test_relative_effect_undefined_at_a_zero_control() -> None:
    c = MeanStats.from_values([-1.0, 1.0, 0.0])
    t = MeanStats.from_values([1.0, 2.0, 3.0])
    result = compare(c, t, design=FIXED)
    assert result.status == "degenerate"
    assert math.isnan(result.relative_effect)
    assert assert_json(result)["relative_effect"] is None


def test_ratio_outside_unit_interval_flagged_as_proportion_is_degenerate() -> None:
    bad = RatioStats.from_values([3, 4], [1, 1], is_proportion=True)
    assert compare(bad, bad, design=FIXED).status == "degenerate"


def test_invalid_arguments_raise() -> None:
    p = ProportionStats(100, 10)
    with pytest.raises(ValueError, match="one-sided"):
        compare(p, p, design=FIXED, margin=0.1)
    with pytest.raises(ValueError, match="positive"):
        compare(p, p, design=FIXED, alternative="greater", margin=-0.1)
    with pytest.raises(ValueError, match="alternative"):
        compare(p, p, design=FIXED, alternative="bigger")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one type"):
        compare(p, MeanStats.from_values([1, 2]), design=FIXED)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantile"):
        h = ClusteredHistogram.empty([0, 1, 2])
        compare(h, h, design=FIXED)


def test_no_strata() -> None:
    result = compare_stratified([], design=FIXED)
    assert result.status == "not_enough_data"


# -------------------------------------------------------------- sequential designs and state


def test_always_valid_p_values_never_increase_and_state_round_trips() -> None:
    rng = np.random.default_rng(5)
    state = SequentialState()
    last = 1.0
    c = t = ProportionStats()
    for _ in range(30):
        c = c + ProportionStats(200, int(rng.binomial(200, 0.1)))
        t = t + ProportionStats(200, int(rng.binomial(200, 0.1)))
        result = compare(c, t, design=ALWAYS, previous=state)
        assert result.p_value <= last
        last = result.p_value
        state = SequentialState.from_dict(json.loads(json.dumps(result.state.to_dict())))
    assert state.p_value == last
    assert SequentialState.from_dict(None) == SequentialState()


def test_always_valid_interval_is_wider_than_fixed() -> None:
    c, t = ProportionStats(20_000, 2000), ProportionStats(20_000, 2200)
    fixed = compare(c, t, design=FIXED)
    sequential = compare(c, t, design=ALWAYS)
    horizon = compare(c, t, design=HORIZON)
    assert sequential.ci_lower < horizon.ci_lower < fixed.ci_lower
    assert sequential.ci_upper > horizon.ci_upper > fixed.ci_upper
    assert fixed.significant and horizon.significant
    assert horizon.boundary is not None and horizon.boundary > 1.96


def test_horizon_calibrated_design_freezes_after_the_horizon() -> None:
    design = InferenceDesign("always_valid", max_units_per_variant=1000)
    null = ProportionStats(1200, 120)
    at_horizon = compare(null, null, design=design)
    assert at_horizon.state.information_fractions == (pytest.approx(1.2),)
    # later data would be significant, but the horizon was passed at the previous look
    later = compare(
        ProportionStats(3000, 300), ProportionStats(3000, 420), design=design,
        previous=at_horizon.state,
    )  # fmt: skip
    assert later.significant is False
    assert later.p_value == at_horizon.p_value
    # without the horizon look it would have been
    assert compare(
        ProportionStats(3000, 300), ProportionStats(3000, 420), design=design
    ).significant


def test_plain_mixture_without_calibration() -> None:
    design = InferenceDesign(
        "always_valid", max_units_per_variant=20_000, calibrate_to_horizon=False
    )
    c, t = ProportionStats(20_000, 2000), ProportionStats(20_000, 2200)
    plain = compare(c, t, design=design)
    assert plain.boundary is None
    assert plain.p_value > compare(c, t, design=HORIZON).p_value


def test_mde_fallback_when_control_is_zero() -> None:
    # absolute scale with a relative MDE of a zero control: tuned to the current variance
    result = compare(
        ProportionStats(1000, 0), ProportionStats(1000, 12), design=ALWAYS, relative=False
    )
    assert result.status == "ok" and 0 <= result.p_value <= 1


def test_group_sequential_tracks_looks() -> None:
    state = SequentialState()
    fractions = []
    for n in (2000, 2050, 6000, 10_000, 20_000):
        c = ProportionStats(n, n // 10)
        t = ProportionStats(n, n // 10 + n // 100)
        result = compare(c, t, design=GROUP, previous=state, relative=False)
        state = result.state
        if n == 2050:  # information grew by 0.0025 < 0.01: no new look
            assert "no new interim look" in result.message
            assert state.information_fractions == tuple(fractions)
            continue
        fractions.append(n / 20_000)
        assert state.information_fractions == pytest.approx(tuple(fractions))
        bounds = spending_boundaries(fractions, 0.05, "obrien_fleming")
        assert result.boundary == pytest.approx(bounds[-1])
        z = result.absolute_effect / result.standard_error
        assert result.significant == (abs(z) >= bounds[-1] or (state.p_value or 1) <= 0.05)
        assert (result.p_value <= 0.05) == result.significant
        # repeated confidence interval
        assert result.ci_lower == pytest.approx(result.absolute_effect - bounds[-1] * result.standard_error)  # fmt: skip


def test_group_sequential_before_the_first_look() -> None:
    result = compare(ProportionStats(100, 10), ProportionStats(100, 12), design=GROUP)
    assert result.status == "not_enough_data"
    assert "first look" in result.message


def test_group_sequential_one_sided_and_non_inferiority() -> None:
    c, t = ProportionStats(10_000, 1000), ProportionStats(10_000, 1000)
    result = compare(
        c, t, design=GROUP, alternative="greater", relative=False, margin=0.02,
        margin_relative=False,
    )  # fmt: skip
    assert result.non_inferior is True
    assert math.isinf(result.ci_upper)
    carried = compare(
        c, t, design=GROUP, alternative="greater", relative=False, margin=0.02,
        margin_relative=False, previous=result.state,
    )  # fmt: skip
    assert carried.non_inferior is True  # carried: no new look, the decision stands


def test_repeated_p_value_extremes() -> None:
    huge = compare(ProportionStats(20_000, 1000), ProportionStats(20_000, 3000), design=GROUP)
    assert huge.significant and huge.p_value <= 1e-9
    same = compare(ProportionStats(20_000, 2000), ProportionStats(20_000, 2000), design=GROUP)
    assert not same.significant and same.p_value > 0.9


# ----------------------------------------------------------------------- other statistics


def test_ratio_metrics_use_the_delta_method() -> None:
    rng = np.random.default_rng(9)
    y_c = rng.poisson(5, 2000) + 1.0
    y_t = rng.poisson(5, 2000) + 1.0
    c = RatioStats.from_values(rng.gamma(2, 10, 2000) * y_c, y_c)
    t = RatioStats.from_values(rng.gamma(2, 11, 2000) * y_t, y_t)
    result = compare(c, t, design=FIXED, relative=False)
    se = math.sqrt(c.variance_of_ratio + t.variance_of_ratio)
    assert result.test == "delta_method"
    assert result.standard_error == pytest.approx(se)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(t.ratio - c.ratio) / se))


def test_clustered_error_rate_uses_effective_counts() -> None:
    rng = np.random.default_rng(4)
    calls = rng.integers(1, 30, 3000).astype(float)
    unit_rate = rng.beta(1, 30, 3000)  # errors cluster in units
    errors = rng.binomial(calls.astype(int), unit_rate).astype(float)
    c = RatioStats.from_values(errors, calls, is_proportion=True)
    result = compare(c, c, design=FIXED, relative=False)
    assert result.test == "newcombe"
    # wider than the binomial interval that ignores clustering
    naive = newcombe_interval(
        ProportionStats(int(calls.sum()), int(errors.sum())),
        ProportionStats(int(calls.sum()), int(errors.sum())),
    )
    design_effect = c.variance_of_ratio / (c.ratio * (1 - c.ratio) / c.denominator_sum)
    assert design_effect > 1.3
    width_ratio = (result.ci_upper - result.ci_lower) / (naive[1] - naive[0])
    assert width_ratio == pytest.approx(math.sqrt(design_effect), rel=0.02)


def test_auc_comparison_uses_delong() -> None:
    c = BinnedScores((50, 40, 30, 20, 10), (10, 20, 30, 40, 50))
    t = BinnedScores((55, 45, 30, 15, 5), (5, 15, 30, 45, 55))
    result = compare(c, t, design=FIXED, relative=False)
    diff, _se, p, low, high = auc_difference_test(c, t)
    assert result.test == "delong"
    assert result.absolute_effect == pytest.approx(diff)
    assert result.p_value == pytest.approx(p)
    assert (result.ci_lower, result.ci_upper) == pytest.approx((low, high))


def test_quantile_comparison() -> None:
    rng = np.random.default_rng(8)
    edges = log_spaced_bin_edges()
    units_c = [rng.lognormal(3.0, 0.4, rng.integers(1, 8)) for _ in range(1500)]
    units_t = [rng.lognormal(3.2, 0.4, rng.integers(1, 8)) for _ in range(1500)]
    c = ClusteredHistogram.from_unit_values(units_c, edges)
    t = ClusteredHistogram.from_unit_values(units_t, edges)
    result = compare(c, t, design=FIXED, quantile=0.9, relative=False)
    qc, qt = clustered_quantile(c, 0.9), clustered_quantile(t, 0.9)
    assert result.test == "clustered_quantile"
    assert result.absolute_effect == pytest.approx(qt.estimate - qc.estimate)
    assert result.standard_error == pytest.approx(math.hypot(qc.standard_error, qt.standard_error))
    assert result.significant
    empty = ClusteredHistogram.empty(edges)
    assert compare(empty, t, design=FIXED, quantile=0.9).status == "not_enough_data"
    # a quantile in the open last bin has no finite estimate
    top = ClusteredHistogram.from_unit_values([[1e9, 2e9], [3e9]], edges)
    assert compare(top, top, design=FIXED, quantile=0.5).status == "degenerate"


# --------------------------------------------------------------------------- stratification


def test_one_stratum_is_compare() -> None:
    c, t = ProportionStats(3000, 300), ProportionStats(3000, 350)
    assert compare_stratified([(c, t)], design=ALWAYS) == compare(c, t, design=ALWAYS)


def test_stratified_estimator_removes_a_ramp_trend() -> None:
    # baseline 0.09 -> 0.10 -> 0.11 while treatment share grows 5 -> 25 -> 50 %: A/A
    strata = [
        (ProportionStats(9500, 855), ProportionStats(500, 45)),
        (ProportionStats(7500, 750), ProportionStats(2500, 250)),
        (ProportionStats(5000, 550), ProportionStats(5000, 550)),
    ]
    stratified = compare_stratified(strata, design=FIXED, relative=False)
    assert stratified.absolute_effect == pytest.approx(0.0, abs=1e-12)
    pooled_c = sum((c for c, _ in strata), ProportionStats())
    pooled_t = sum((t for _, t in strata), ProportionStats())
    pooled = compare(pooled_c, pooled_t, design=FIXED, relative=False)
    assert pooled.absolute_effect > 0.005  # the trend looks like an effect when pooled
    assert stratified.test == "agresti_caffo_normal"
    # variance: sum of w^2 Var with common weights 1/3
    variances = [
        ((x + 1) / (n + 2)) * (1 - (x + 1) / (n + 2)) / (n + 2)
        for pair in strata
        for x, n in [(pair[0].successes, pair[0].n), (pair[1].successes, pair[1].n)]
    ]
    assert stratified.standard_error == pytest.approx(math.sqrt(sum(variances) / 9))


def test_ipw_weights() -> None:
    strata = [
        (
            MeanStats.from_values(np.full(90, 1.0) + np.arange(90) % 2),
            MeanStats.from_values(np.full(10, 1.0) + np.arange(10) % 2),
        ),
        (
            MeanStats.from_values(np.full(50, 3.0) + np.arange(50) % 2),
            MeanStats.from_values(np.full(50, 3.0) + np.arange(50) % 2),
        ),
    ]
    result = compare_stratified(
        strata, design=FIXED, relative=False, weighting="ipw",
        assignment_probabilities=[(0.9, 0.1), (0.5, 0.5)],
    )  # fmt: skip
    # Hajek weights: units / probability -> 100 per epoch for both arms: equal weights
    assert result.control_estimate == pytest.approx(0.5 * 1.5 + 0.5 * 3.5)
    assert result.absolute_effect == pytest.approx(0.0)
    with pytest.raises(ValueError, match="assignment_probabilities"):
        compare_stratified(strata, design=FIXED, weighting="ipw")
    with pytest.raises(ValueError, match="one pair"):
        compare_stratified(strata, design=FIXED, assignment_probabilities=[(0.5, 0.5)])
    with pytest.raises(ValueError, match="weighting"):
        compare_stratified(strata, design=FIXED, weighting="other")  # type: ignore[arg-type]


def test_strata_without_data_are_left_out() -> None:
    strata = [
        (ProportionStats(1000, 100), ProportionStats()),  # before the treatment had weight
        (ProportionStats(5000, 500), ProportionStats(5000, 600)),
    ]
    result = compare_stratified(strata, design=FIXED, relative=False)
    assert "stratum 0 left out" in result.message
    assert result.absolute_effect == pytest.approx(0.02)
    assert result.control_units == 6000
    only_bad = compare_stratified(
        [
            (ProportionStats(1000, 100), ProportionStats()),
            (ProportionStats(1, 0), ProportionStats()),
        ],
        design=FIXED,
    )
    assert only_bad.status == "not_enough_data"
    thin = compare_stratified(
        [(ProportionStats(1000, 100), ProportionStats()), (ProportionStats(5, 0), ProportionStats(1000, 100))],
        design=InferenceDesign("fixed", min_units_per_variant=10),
    )  # fmt: skip
    assert thin.status == "not_enough_data"
    assert "usable strata" in thin.message


def test_an_absolute_mde_tunes_absolute_scale_intervals_near_zero() -> None:
    """An error rate near 0 on the absolute scale: the relative MDE times the control's rate is a
    tiny effect, and a mixture tuned to it gives a confidence sequence several times wider than
    the fixed interval (tens of times for a single normal mixture; the grid's components for
    larger effects narrow it); tuned to an absolute MDE (the guardrail's margin) it is close to
    it."""
    control, treatment = ProportionStats(20_000, 30), ProportionStats(20_000, 60)
    kwargs = {"alternative": "two-sided", "relative": False}
    fixed = compare(control, treatment, design=InferenceDesign("fixed"), **kwargs)
    derived = compare(control, treatment, design=InferenceDesign(), **kwargs)
    tuned = compare(control, treatment, design=InferenceDesign(mde_absolute=0.01), **kwargs)
    width = {id(r): r.ci_upper - r.ci_lower for r in (fixed, derived, tuned)}
    for r in (derived, tuned):
        assert r.absolute_effect == pytest.approx(0.0015)
        assert r.ci_lower < r.absolute_effect < r.ci_upper
        assert width[id(r)] > width[id(fixed)]  # an always-valid interval is never narrower
    assert width[id(derived)] > 3 * width[id(fixed)]
    assert width[id(tuned)] < 2 * width[id(fixed)]
    assert width[id(derived)] > 1.5 * width[id(tuned)]
    assert tuned.p_value >= fixed.p_value


@pytest.mark.parametrize(
    ("design", "early"),
    [(ALWAYS, (520, 920)), (HORIZON, (520, 920)), (GROUP, (600, 960))],
    ids=["always", "horizon", "group"],
)
def test_sequential_intervals_are_intersected_so_direction_agrees_with_p(
    design: InferenceDesign, early: tuple[int, int]
) -> None:
    """Issue 13 item 6: the sequential p-value is a running minimum, so the interval must be the
    running intersection; else an effect found better at one look is "significant" later with an
    interval that holds 0 (and, with a negative estimate, was read as "worse")."""
    looks_data = [
        (ProportionStats(4000, 400), ProportionStats(4000, early[0])),  # clearly better
        (ProportionStats(8000, 800), ProportionStats(8000, early[1])),
        (ProportionStats(16000, 1600), ProportionStats(16000, 1700)),  # pooled +6%
    ]
    state, looks = None, []
    for control, treatment in looks_data:
        result = compare(control, treatment, design=design, previous=state)
        state = result.state
        looks.append(result)
    assert looks[0].significant and looks[0].ci_lower > 0
    fresh = compare(*looks_data[-1], design=design, previous=SequentialState(p_value=None))
    assert fresh.ci_lower < 0 < fresh.ci_upper  # the last look alone would hold 0
    for before, after in itertools.pairwise(looks):
        # each interval lies within the one before: the running intersection
        assert after.ci_lower >= before.ci_lower - 1e-12
        assert after.ci_upper <= before.ci_upper + 1e-12
    last = looks[-1]
    assert last.significant and last.ci_lower > 0  # still better, never 0 inside, never worse


def test_cmh_epoch_weights_cancel_a_drifting_baseline_and_waste_less_power() -> None:
    """Issue 13 item 9: a 5/95 epoch weighted by its total size costs variance for nothing; CMH
    weights (n_c n_t / (n_c + n_t)) count it by its small arm. Both leave a drifting baseline
    out of the effect."""
    strata = [
        (ProportionStats(9500, 855), ProportionStats(500, 45)),  # 5% step, baseline 9%
        (ProportionStats(7500, 750), ProportionStats(2500, 250)),  # 25% step, baseline 10%
        (ProportionStats(5000, 550), ProportionStats(5000, 550)),  # 50% step, baseline 11%
    ]
    by_size = compare_stratified(strata, design=FIXED, weighting="stratum_size")
    cmh = compare_stratified(strata, design=FIXED, weighting="cmh")
    assert by_size.relative_effect == pytest.approx(0, abs=1e-12)
    assert cmh.relative_effect == pytest.approx(0, abs=1e-12)
    ratio = (by_size.standard_error / cmh.standard_error) ** 2
    assert ratio > 1.3, ratio  # the variance stratum-size weighting wastes
    pooled = compare(ProportionStats(22000, 2155), ProportionStats(8000, 845), design=FIXED)
    assert pooled.relative_effect > 0.05  # pooling turns the drift into a fake lift
