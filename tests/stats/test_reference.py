"""abstats.stats against scipy and statsmodels, to 1e-9 (or their solvers' own tolerance)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats import multitest
from statsmodels.stats import proportion as sm_proportion
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    power_proportions_2indep,
    proportion_confint,
    proportions_ztest,
    samplesize_proportions_2indep_onetail,
)
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from abstats.stats import (
    MeanStats,
    ProportionStats,
    agresti_caffo_interval,
    agresti_caffo_test,
    benjamini_hochberg,
    fixed_power,
    holm,
    newcombe_interval,
    sample_size_per_arm,
    two_proportion_z_test,
    welch_t_test,
    wilson_interval,
)

TOL = 1e-9
# statsmodels computes ratios and odds ratios too, which divide by zero at 0 successes
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
SM_ALTERNATIVE = {"two-sided": "two-sided", "greater": "larger", "less": "smaller"}

PROPORTION_CASES = [
    # (x_c, n_c, x_t, n_t)
    (100, 1000, 130, 1000),
    (5, 40, 12, 37),
    (0, 15000, 3, 15000),
    (499, 500, 500, 500),
    (1230, 98000, 1301, 102000),
    (1, 3, 2, 3),
]


@pytest.mark.parametrize(("xc", "nc", "xt", "nt"), PROPORTION_CASES)
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_pooled_z_matches_proportions_ztest(
    xc: int, nc: int, xt: int, nt: int, alternative: str
) -> None:
    ours = two_proportion_z_test(
        ProportionStats(nc, xc), ProportionStats(nt, xt), alternative=alternative
    )
    z, p = proportions_ztest([xt, xc], [nt, nc], alternative=SM_ALTERNATIVE[alternative])
    assert ours.statistic == pytest.approx(z, rel=TOL, abs=TOL)
    assert ours.p_value == pytest.approx(p, rel=TOL, abs=TOL)
    # the pooled z test is the score test at diff 0 (Miettinen-Nurminen without correction)
    score = sm_proportion.test_proportions_2indep(
        xt, nt, xc, nc, method="score", correction=False, alternative=SM_ALTERNATIVE[alternative]
    )
    assert ours.p_value == pytest.approx(score.pvalue, rel=TOL, abs=TOL)


@pytest.mark.parametrize(("xc", "nc", "xt", "nt"), PROPORTION_CASES)
def test_wald_interval_matches_statsmodels(xc: int, nc: int, xt: int, nt: int) -> None:
    ours = two_proportion_z_test(ProportionStats(nc, xc), ProportionStats(nt, xt), alpha=0.1)
    low, high = confint_proportions_2indep(xt, nt, xc, nc, method="wald", alpha=0.1)
    assert (ours.ci_lower, ours.ci_upper) == pytest.approx((low, high), rel=TOL, abs=TOL)


@pytest.mark.parametrize(("xc", "nc", "xt", "nt"), PROPORTION_CASES)
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_newcombe_and_agresti_caffo_intervals(
    xc: int, nc: int, xt: int, nt: int, alpha: float
) -> None:
    c, t = ProportionStats(nc, xc), ProportionStats(nt, xt)
    expected = confint_proportions_2indep(xt, nt, xc, nc, method="newcomb", alpha=alpha)
    assert newcombe_interval(c, t, alpha) == pytest.approx(expected, rel=TOL, abs=TOL)
    expected = confint_proportions_2indep(xt, nt, xc, nc, method="agresti-caffo", alpha=alpha)
    assert agresti_caffo_interval(c, t, alpha) == pytest.approx(expected, rel=TOL, abs=TOL)


@pytest.mark.parametrize(("xc", "nc", "xt", "nt"), PROPORTION_CASES)
@pytest.mark.parametrize("value", [0.0, -0.01, 0.02])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_agresti_caffo_test_matches_test_proportions_2indep(
    xc: int, nc: int, xt: int, nt: int, value: float, alternative: str
) -> None:
    ours = agresti_caffo_test(
        ProportionStats(nc, xc), ProportionStats(nt, xt), value=value, alternative=alternative
    )
    theirs = sm_proportion.test_proportions_2indep(
        xt,
        nt,
        xc,
        nc,
        value=value,
        method="agresti-caffo",
        alternative=SM_ALTERNATIVE[alternative],
    )
    assert ours.statistic == pytest.approx(theirs.statistic, rel=TOL, abs=TOL)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=TOL, abs=TOL)


@pytest.mark.parametrize(("x", "n"), [(0, 10), (3, 10), (10, 10), (0, 15000), (77, 1234)])
def test_wilson_matches_proportion_confint(x: int, n: int) -> None:
    expected = proportion_confint(x, n, alpha=0.05, method="wilson")
    assert wilson_interval(x, n, 0.05) == pytest.approx(expected, rel=TOL, abs=TOL)


WELCH_CASES = [
    (np.arange(10.0), np.arange(12.0) * 1.3 + 0.5),
    (np.array([1.0, 2.0, 2.5, 8.0]), np.array([0.5, 0.7, 3.0, 3.1, 2.2, 9.0, 1.0])),
]


@pytest.mark.parametrize(("control", "treatment"), WELCH_CASES)
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_welch_matches_ttest_ind_from_stats(
    control: np.ndarray, treatment: np.ndarray, alternative: str
) -> None:
    c, t = MeanStats.from_values(control), MeanStats.from_values(treatment)
    ours = welch_t_test(c, t, alternative=alternative, alpha=0.1)
    theirs = stats.ttest_ind_from_stats(
        t.mean,
        np.sqrt(t.variance),
        t.n,
        c.mean,
        np.sqrt(c.variance),
        c.n,
        equal_var=False,
        alternative=alternative,
    )
    assert ours.statistic == pytest.approx(theirs.statistic, rel=TOL)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=TOL)
    low, high = CompareMeans(DescrStatsW(treatment), DescrStatsW(control)).tconfint_diff(
        alpha=0.1, usevar="unequal", alternative=SM_ALTERNATIVE[alternative]
    )
    assert ours.ci_lower == pytest.approx(low, rel=TOL)
    assert ours.ci_upper == pytest.approx(high, rel=TOL)


P_VALUES = [
    [0.01, 0.04, 0.03, 0.2, 0.5, 0.001, 0.049],
    [0.5],
    [0.2, 0.2, 0.2, 0.01],
    list(np.random.default_rng(3).uniform(size=25) ** 3),
]


@pytest.mark.parametrize("p_values", P_VALUES)
def test_holm_and_bh_match_multipletests(p_values: list[float]) -> None:
    assert holm(p_values) == pytest.approx(
        list(multitest.multipletests(p_values, method="holm")[1]), rel=TOL, abs=TOL
    )
    assert benjamini_hochberg(p_values) == pytest.approx(
        list(multitest.multipletests(p_values, method="fdr_bh")[1]), rel=TOL, abs=TOL
    )


@pytest.mark.parametrize(("baseline", "lift"), [(0.1, 0.1), (0.02, 0.25), (0.5, -0.05)])
@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_proportion_power_and_sample_size(baseline: float, lift: float, alternative: str) -> None:
    if lift < 0 and alternative == "greater":
        alternative = "less"
    diff = baseline * lift
    expected_n = samplesize_proportions_2indep_onetail(
        diff, baseline, 0.8, alpha=0.05, alternative=SM_ALTERNATIVE[alternative]
    )
    n = sample_size_per_arm(baseline, lift, power=0.8, alternative=alternative)
    assert n == pytest.approx(expected_n, rel=TOL)
    expected_power = power_proportions_2indep(
        diff, baseline, 12345, alpha=0.05, alternative=SM_ALTERNATIVE[alternative]
    ).power
    assert fixed_power(baseline, lift, 12345, alternative=alternative) == pytest.approx(
        expected_power, rel=TOL
    )


@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_mean_power_and_sample_size(alternative: str) -> None:
    effect = 0.5 / 20
    expected = NormalIndPower().solve_power(
        effect, alpha=0.05, power=0.9, alternative=SM_ALTERNATIVE[alternative]
    )
    n = sample_size_per_arm(10, 0.05, power=0.9, kind="mean", sd=20, alternative=alternative)
    assert n == pytest.approx(expected, rel=1e-8)  # statsmodels' own root-finding tolerance
    power = fixed_power(10, 0.05, 5000, kind="mean", sd=20, alternative=alternative)
    assert power == pytest.approx(
        NormalIndPower().power(effect, 5000, 0.05, alternative=SM_ALTERNATIVE[alternative]),
        rel=TOL,
    )
