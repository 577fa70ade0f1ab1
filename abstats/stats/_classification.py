"""ROC AUC with DeLong's variance on binned scores."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import special, stats

from abstats.stats._design import Alternative, norm_isf
from abstats.stats._sufficient import BinnedScores


class AucEstimate(NamedTuple):
    """AUC and DeLong's variance of it (NaN when undefined)."""

    auc: float
    variance: float
    positives: int
    negatives: int


def auc_delong(scores: BinnedScores) -> AucEstimate:
    """ROC AUC and DeLong's variance from binned, labelled scores.

    Placement values (DeLong, DeLong and Clarke-Pearson 1988, Biometrics 44, 837-845): a positive
    in bin ``j`` scores ``V10_j = (negatives below j + negatives in j / 2) / n``, a negative
    ``V01_j = (positives above j + positives in j / 2) / m``. ``AUC = mean(V10)`` and
    ``Var(AUC) = S10 / m + S01 / n`` with ``S10, S01`` the sample variances (ddof=1) of the
    placements. Ties within a bin count one half, so the AUC equals the Mann-Whitney ``U / (m n)``
    of the binned scores. The variance treats requests as independent.
    """
    pos = np.asarray(scores.positives, dtype=float)
    neg = np.asarray(scores.negatives, dtype=float)
    m, n = float(pos.sum()), float(neg.sum())
    if m == 0 or n == 0:
        return AucEstimate(math.nan, math.nan, int(m), int(n))
    neg_below = np.cumsum(neg) - neg
    pos_above = pos.sum() - np.cumsum(pos)
    v10 = (neg_below + 0.5 * neg) / n
    v01 = (pos_above + 0.5 * pos) / m
    auc = float(pos @ v10 / m)
    if m < 2 or n < 2:
        return AucEstimate(auc, math.nan, int(m), int(n))
    s10 = float(pos @ (v10 - auc) ** 2 / (m - 1))
    s01 = float(neg @ (v01 - auc) ** 2 / (n - 1))
    return AucEstimate(auc, s10 / m + s01 / n, int(m), int(n))


def auc_difference_test(
    control: BinnedScores,
    treatment: BinnedScores,
    *,
    alternative: Alternative = "two-sided",
    alpha: float = 0.05,
) -> tuple[float, float, float, float, float]:
    """z test of the difference of two independent AUCs (different variants' requests).

    ``z = (AUC_t - AUC_c) / sqrt(Var_t + Var_c)`` with DeLong variances (Hanley and McNeil 1983
    for independent samples). Returns ``(difference, standard_error, p_value, ci_lower,
    ci_upper)``; NaN when undefined.
    """
    t = auc_delong(treatment)
    c = auc_delong(control)
    diff = t.auc - c.auc
    se = math.sqrt(t.variance + c.variance)
    if not (se > 0):
        return diff, se, math.nan, math.nan, math.nan
    z = diff / se
    if alternative == "two-sided":
        p = float(2 * special.ndtr(-abs(z)))
        q = float(norm_isf(alpha / 2))
        return diff, se, p, diff - q * se, diff + q * se
    q = float(norm_isf(alpha))
    if alternative == "greater":
        return diff, se, float(special.ndtr(-z)), diff - q * se, math.inf
    return diff, se, float(stats.norm.cdf(z)), -math.inf, diff + q * se
