"""Quantiles of request-level values clustered in units, from histograms.

The approach of GrowthBook's ``gbstats`` clustered quantiles: the CDF at the estimated quantile,
``F(q) = sum_u L_u(q) / sum_u N_u``, is a ratio of per-unit sums, so its variance follows from the
delta method on units (requests of one unit are not independent); the interval for the quantile
inverts the CDF at ``p -+ z se(F)`` (Woodruff 1952, JASA 47, 635-646), and the quantile's
standard error is that interval's width over ``2 z``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from abstats.stats._design import norm_isf
from abstats.stats._sufficient import ClusteredHistogram

_Z95 = float(norm_isf(0.025))


class QuantileEstimate(NamedTuple):
    """A quantile, its clustered standard error and the Woodruff interval (NaN when undefined)."""

    quantile: float
    estimate: float
    standard_error: float
    ci_lower: float
    ci_upper: float
    cdf_standard_error: float


def _inverse_cdf(
    level: float, cumulative: NDArray[np.float64], edges: NDArray[np.float64]
) -> tuple[float, int, float]:
    """Interpolated quantile of the binned distribution: (value, bin, fraction within bin)."""
    total = cumulative[-1]
    target = min(max(level, 0.0), 1.0) * total
    b = int(np.searchsorted(cumulative, target, side="left"))
    b = min(b, cumulative.size - 1)
    below = cumulative[b - 1] if b > 0 else 0.0
    in_bin = cumulative[b] - below
    fraction = (target - below) / in_bin if in_bin > 0 else 0.0
    lower_edge, upper_edge = float(edges[b]), float(edges[b + 1])
    if not math.isfinite(upper_edge):
        return (lower_edge if fraction == 0.0 else math.inf), b, float(fraction)
    return lower_edge + float(fraction) * (upper_edge - lower_edge), b, float(fraction)


def clustered_quantile(
    histogram: ClusteredHistogram, quantile: float, *, alpha: float = 0.05
) -> QuantileEstimate:
    """Quantile of request-level values with an interval that accounts for clustering in units.

    The estimate interpolates linearly within the bin holding the ``quantile`` of the pooled
    requests. At it, with per-unit ``L_u`` (requests at or below) and ``N_u`` (requests), means
    ``mL, mN`` over ``n`` units, sample variances ``vL, vN`` and covariance ``cLN``:
    ``Var(F) = (vL - 2 F cLN + F^2 vN) / (n mN^2)`` (delta method for a ratio), with the per-unit
    sums interpolated within the bin like the counts. The interval is
    ``[Q(p - z se_F), Q(p + z se_F)]`` and ``standard_error`` is ``(Q(p + z95 se_F) -
    Q(p - z95 se_F)) / (2 z95)``. The estimate is exact up to the bin width (use
    :func:`abstats.stats.log_spaced_bin_edges`); a quantile in the open last bin is infinite.
    """
    if not 0 < quantile < 1:
        raise ValueError("quantile must be in (0, 1)")
    counts = np.asarray(histogram.counts, dtype=float)
    total = float(counts.sum())
    n = histogram.units
    if total == 0 or n < 2:
        return QuantileEstimate(quantile, math.nan, math.nan, math.nan, math.nan, math.nan)
    edges = np.asarray(histogram.bin_edges, dtype=float)
    cumulative = np.cumsum(counts)
    estimate, b, fraction = _inverse_cdf(quantile, cumulative, edges)
    squares = np.cumsum(np.asarray(histogram.square_increments, dtype=float))
    crosses = np.cumsum(np.asarray(histogram.cross_increments, dtype=float))

    def at(values: NDArray[np.float64]) -> float:
        before = values[b - 1] if b > 0 else 0.0
        return float(before + fraction * (values[b] - before))

    sum_l = at(cumulative)
    sum_l2 = at(squares)
    sum_ln = at(crosses)
    sum_n2 = float(crosses[-1])  # sum_u N_u^2 = sum_b c[u, b] N_u
    f = sum_l / total
    m_l, m_n = sum_l / n, total / n
    v_l = max(sum_l2 - n * m_l * m_l, 0.0) / (n - 1)
    v_n = max(sum_n2 - n * m_n * m_n, 0.0) / (n - 1)
    c_ln = (sum_ln - n * m_l * m_n) / (n - 1)
    cdf_se = math.sqrt(max(v_l - 2 * f * c_ln + f * f * v_n, 0.0) / (n * m_n * m_n))
    z = float(norm_isf(alpha / 2))
    lower = _inverse_cdf(quantile - z * cdf_se, cumulative, edges)[0]
    upper = _inverse_cdf(quantile + z * cdf_se, cumulative, edges)[0]
    low95 = _inverse_cdf(quantile - _Z95 * cdf_se, cumulative, edges)[0]
    high95 = _inverse_cdf(quantile + _Z95 * cdf_se, cumulative, edges)[0]
    se = (high95 - low95) / (2 * _Z95)
    return QuantileEstimate(quantile, estimate, se, lower, upper, cdf_se)
