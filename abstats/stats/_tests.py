"""Fixed-horizon two-sample tests and intervals on sufficient statistics.

Every function takes ``(control, treatment)`` in that order; effects are ``treatment - control``
and ``alternative="greater"`` means treatment > control (statsmodels puts the treatment first:
the docstrings say which statsmodels call gives the same result, with its arguments in its order).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from scipy import optimize, special, stats

from abstats.stats._design import Alternative, norm_isf
from abstats.stats._sufficient import MeanStats, ProportionStats


class TestOutcome(NamedTuple):
    """A test statistic, its p-value and an interval for ``treatment - control``."""

    statistic: float
    p_value: float
    ci_lower: float
    ci_upper: float


def _normal_p_value(z: float, alternative: Alternative) -> float:
    if alternative == "two-sided":
        return float(2 * special.ndtr(-abs(z)))
    if alternative == "greater":
        return float(special.ndtr(-z))
    return float(stats.norm.cdf(z))


def _critical(alpha: float, alternative: Alternative) -> float:
    return float(norm_isf(alpha / 2 if alternative == "two-sided" else alpha))


def _one_sided_bounds(
    estimate: float, half_width: float, alternative: Alternative
) -> tuple[float, float]:
    if alternative == "two-sided":
        return estimate - half_width, estimate + half_width
    if alternative == "greater":
        return estimate - half_width, math.inf
    return -math.inf, estimate + half_width


def two_proportion_z_test(
    control: ProportionStats,
    treatment: ProportionStats,
    *,
    alternative: Alternative = "two-sided",
    alpha: float = 0.05,
) -> TestOutcome:
    """Pooled two-proportion z test, with the unpooled Wald interval.

    ``z = (p_t - p_c) / sqrt(p (1 - p) (1/n_t + 1/n_c))`` with the pooled ``p``; the same as
    ``statsmodels.stats.proportion.proportions_ztest([x_t, x_c], [n_t, n_c])``. The interval is
    ``p_t - p_c +- z_{alpha} sqrt(p_t (1 - p_t) / n_t + p_c (1 - p_c) / n_c)``. Both fail at 0 and
    1 (zero variance): use :func:`newcombe_interval` there. NaN when undefined.
    """
    if control.n == 0 or treatment.n == 0:
        return TestOutcome(math.nan, math.nan, math.nan, math.nan)
    p_t, p_c = treatment.proportion, control.proportion
    pooled = (treatment.successes + control.successes) / (treatment.n + control.n)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / treatment.n + 1 / control.n))
    diff = p_t - p_c
    z = diff / se0 if se0 > 0 else math.nan
    p = _normal_p_value(z, alternative) if se0 > 0 else math.nan
    se = math.sqrt(p_t * (1 - p_t) / treatment.n + p_c * (1 - p_c) / control.n)
    lower, upper = _one_sided_bounds(diff, _critical(alpha, alternative) * se, alternative)
    return TestOutcome(z, p, lower, upper)


def welch_t_test(
    control: MeanStats,
    treatment: MeanStats,
    *,
    alternative: Alternative = "two-sided",
    alpha: float = 0.05,
) -> TestOutcome:
    """Welch's unequal-variance t test of ``mean_t - mean_c``, with its interval.

    ``t = (m_t - m_c) / sqrt(s_t^2/n_t + s_c^2/n_c)`` on Welch-Satterthwaite degrees of freedom
    (Welch 1947); the same as ``scipy.stats.ttest_ind_from_stats(..., equal_var=False)``.
    NaN below two units per arm or with zero variance in both.
    """
    if control.n < 2 or treatment.n < 2:
        return TestOutcome(math.nan, math.nan, math.nan, math.nan)
    vt = treatment.variance / treatment.n
    vc = control.variance / control.n
    se = math.sqrt(vt + vc)
    if se == 0:
        return TestOutcome(math.nan, math.nan, math.nan, math.nan)
    df = (vt + vc) ** 2 / (vt * vt / (treatment.n - 1) + vc * vc / (control.n - 1))
    diff = treatment.mean - control.mean
    t = diff / se
    if alternative == "two-sided":
        p = float(2 * stats.t.sf(abs(t), df))
        q = float(stats.t.isf(alpha / 2, df))
    elif alternative == "greater":
        p = float(stats.t.sf(t, df))
        q = float(stats.t.isf(alpha, df))
    else:
        p = float(stats.t.cdf(t, df))
        q = float(stats.t.isf(alpha, df))
    lower, upper = _one_sided_bounds(diff, q * se, alternative)
    return TestOutcome(t, p, lower, upper)


def wilson_interval(
    successes: float, n: float, alpha: float = 0.05, *, z: float | None = None
) -> tuple[float, float]:
    """Wilson (1927) score interval for a proportion; valid at 0 and 1.

    ``(p + z^2/(2n) +- z sqrt(p (1-p)/n + z^2/(4n^2))) / (1 + z^2/n)``, with
    ``z = z_{1 - alpha/2}`` unless ``z`` is given. Counts may be non-integer (effective counts).
    ``(0, 1)`` without trials.
    """
    if n <= 0:
        return 0.0, 1.0
    if z is None:
        z = float(norm_isf(alpha / 2))
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0)) / denominator
    return max(centre - half, 0.0), min(centre + half, 1.0)


def _counts(stats_or_counts: ProportionStats | tuple[float, float]) -> tuple[float, float]:
    if isinstance(stats_or_counts, ProportionStats):
        return float(stats_or_counts.successes), float(stats_or_counts.n)
    return float(stats_or_counts[0]), float(stats_or_counts[1])


def newcombe_bounds(
    control: tuple[float, float], treatment: tuple[float, float], z: float
) -> tuple[float, float]:
    """Newcombe's hybrid score bounds for ``p_t - p_c`` at critical value ``z``.

    ``L = d - sqrt((p_t - l_t)^2 + (u_c - p_c)^2)``, ``U = d + sqrt((u_t - p_t)^2 +
    (p_c - l_c)^2)`` with Wilson limits ``(l, u)`` (Newcombe 1998, Stat. Med. 17, method 10).
    Arguments are ``(successes, trials)``.
    """
    xc, nc = control
    xt, nt = treatment
    pt, pc = xt / nt, xc / nc
    lt, ut = wilson_interval(xt, nt, z=z)
    lc, uc = wilson_interval(xc, nc, z=z)
    d = pt - pc
    return (
        d - math.sqrt((pt - lt) ** 2 + (uc - pc) ** 2),
        d + math.sqrt((ut - pt) ** 2 + (pc - lc) ** 2),
    )


def newcombe_interval(
    control: ProportionStats | tuple[float, float],
    treatment: ProportionStats | tuple[float, float],
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``p_t - p_c`` (two-sided ``1 - alpha``).

    Valid at 0 and 1 and always containing the observed difference; equals
    ``statsmodels.stats.proportion.confint_proportions_2indep(..., method="newcomb")``.
    Arguments are :class:`ProportionStats` or ``(successes, trials)``, possibly non-integer.
    """
    c, t = _counts(control), _counts(treatment)
    if c[1] <= 0 or t[1] <= 0:
        return -1.0, 1.0
    return newcombe_bounds(c, t, float(norm_isf(alpha / 2)))


def newcombe_p_value(
    control: tuple[float, float],
    treatment: tuple[float, float],
    *,
    null_value: float = 0.0,
    alternative: Alternative = "two-sided",
) -> float:
    """The p-value that inverts Newcombe's interval: the smallest ``alpha`` excluding the null.

    One-sided ``greater``: ``p = 1 - Phi(z*)`` where the lower bound at critical value ``z*``
    equals ``null_value`` (``L`` decreases in ``z`` from ``d``); ``less`` mirrors it; two-sided is
    twice the smaller one-sided p-value. So ``p <= alpha`` exactly when the corresponding
    Newcombe interval excludes ``null_value``.
    """
    d = treatment[0] / treatment[1] - control[0] / control[1]

    def tail(side: int) -> float:
        # side 0: the lower bound reaches the null (d above it); side 1: the upper bound does
        sign = 1.0 if side == 0 else -1.0

        def excess(z: float) -> float:
            return sign * (newcombe_bounds(control, treatment, z)[side] - null_value)

        if excess(40.0) > 0:
            return float(special.ndtr(-40.0))
        return float(special.ndtr(-optimize.brentq(excess, 0.0, 40.0, xtol=1e-13)))

    if d > null_value:
        p_greater = tail(0)
        p_less = 1.0 - p_greater
    elif d < null_value:
        p_less = tail(1)
        p_greater = 1.0 - p_less
    else:
        p_greater = p_less = 0.5
    if alternative == "greater":
        return p_greater
    if alternative == "less":
        return p_less
    return min(1.0, 2 * min(p_greater, p_less))


def agresti_caffo_interval(
    control: ProportionStats, treatment: ProportionStats, alpha: float = 0.05
) -> tuple[float, float]:
    """Agresti and Caffo (2000) interval: Wald on counts plus one success and one failure per arm.

    ``p~ = (x + 1) / (n + 2)``; ``p~_t - p~_c +- z sqrt(p~_t (1 - p~_t)/(n_t + 2) +
    p~_c (1 - p~_c)/(n_c + 2))``. Equals ``confint_proportions_2indep(...,
    method="agresti-caffo")``.
    """
    pt = (treatment.successes + 1) / (treatment.n + 2)
    pc = (control.successes + 1) / (control.n + 2)
    se = math.sqrt(pt * (1 - pt) / (treatment.n + 2) + pc * (1 - pc) / (control.n + 2))
    z = float(norm_isf(alpha / 2))
    return pt - pc - z * se, pt - pc + z * se


def agresti_caffo_test(
    control: ProportionStats,
    treatment: ProportionStats,
    *,
    value: float = 0.0,
    alternative: Alternative = "two-sided",
    alpha: float = 0.05,
) -> TestOutcome:
    """Agresti-Caffo Wald test of ``p_t - p_c = value`` (``value = -margin`` for non-inferiority).

    ``z = (p~_t - p~_c - value) / se~`` with one success and one failure added per arm; equals
    ``statsmodels.stats.proportion.test_proportions_2indep(..., method="agresti-caffo",
    value=value)``; the interval is :func:`agresti_caffo_interval` (one-sided when asked).
    """
    pt = (treatment.successes + 1) / (treatment.n + 2)
    pc = (control.successes + 1) / (control.n + 2)
    se = math.sqrt(pt * (1 - pt) / (treatment.n + 2) + pc * (1 - pc) / (control.n + 2))
    z = (pt - pc - value) / se
    lower, upper = _one_sided_bounds(pt - pc, _critical(alpha, alternative) * se, alternative)
    return TestOutcome(z, _normal_p_value(z, alternative), lower, upper)
