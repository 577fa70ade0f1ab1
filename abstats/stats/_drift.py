"""Distribution drift on binned counts (computed in SQL on fixed bins shared by both sides)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats
from scipy.spatial import distance

from abstats.stats._multiplicity import benjamini_hochberg
from abstats.stats._results import DriftResult


def _pair(reference: Sequence[float], current: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(reference, dtype=float)
    c = np.asarray(current, dtype=float)
    if r.shape != c.shape or r.ndim != 1 or r.size == 0:
        raise ValueError("reference and current need the same non-zero number of bins")
    if np.any(r < 0) or np.any(c < 0) or not (np.all(np.isfinite(r)) and np.all(np.isfinite(c))):
        raise ValueError("bin counts must be finite and >= 0")
    return r, c


def psi(
    reference_counts: Sequence[float], current_counts: Sequence[float], *, pseudo_count: float = 0.5
) -> float:
    """Population stability index ``sum_i (c_i - r_i) ln(c_i / r_i)`` over bin shares.

    Shares are smoothed with ``pseudo_count`` per bin so that empty bins stay finite
    (``(count + 0.5) / (n + 0.5 B)``). Rules of thumb (Siddiqi 2006, *Credit Risk Scorecards*):
    < 0.1 stable, 0.1-0.2 moderate, > 0.2 major shift. NaN when a side is empty.
    """
    r, c = _pair(reference_counts, current_counts)
    if r.sum() == 0 or c.sum() == 0:
        return math.nan
    rs = (r + pseudo_count) / (r.sum() + pseudo_count * r.size)
    cs = (c + pseudo_count) / (c.sum() + pseudo_count * c.size)
    return float(np.sum((cs - rs) * np.log(cs / rs)))


def jensen_shannon_distance(
    reference_counts: Sequence[float], current_counts: Sequence[float]
) -> float:
    """Jensen-Shannon distance, base 2 (in ``[0, 1]``; the square root of the divergence).

    Lin (1991), IEEE Trans. Inf. Theory 37; ``scipy.spatial.distance.jensenshannon(base=2)``.
    NaN when a side is empty.
    """
    r, c = _pair(reference_counts, current_counts)
    if r.sum() == 0 or c.sum() == 0:
        return math.nan
    return float(distance.jensenshannon(r / r.sum(), c / c.sum(), base=2))


def chi_square_homogeneity(
    reference_counts: Sequence[float], current_counts: Sequence[float]
) -> tuple[float, float]:
    """Pearson chi-square test that both samples come from one binned distribution.

    The 2 x B contingency table without empty columns, no continuity correction
    (``scipy.stats.chi2_contingency(correction=False)``). Returns ``(statistic, p_value)``;
    ``(0, 1)`` when fewer than two bins are occupied, NaN when a side is empty.
    """
    r, c = _pair(reference_counts, current_counts)
    if r.sum() == 0 or c.sum() == 0:
        return math.nan, math.nan
    occupied = (r + c) > 0
    if occupied.sum() < 2:
        return 0.0, 1.0
    table = np.vstack([r[occupied], c[occupied]])
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def binned_ks(
    reference_counts: Sequence[float], current_counts: Sequence[float]
) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic on binned counts, with the asymptotic p-value.

    ``D = max_b |F_ref(b) - F_cur(b)|`` over the bin edges; ``p = Q_KS(sqrt(n m / (n + m)) D)``
    (Kolmogorov's limiting distribution, ``scipy.stats.kstwobign``), conservative for binned
    (discrete) data (Noether 1963). NaN when a side is empty.
    """
    r, c = _pair(reference_counts, current_counts)
    n, m = r.sum(), c.sum()
    if n == 0 or m == 0:
        return math.nan, math.nan
    d = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    return d, float(stats.kstwobign.sf(math.sqrt(n * m / (n + m)) * d))


def drift_check(
    reference_counts: Sequence[float],
    current_counts: Sequence[float],
    *,
    psi_threshold: float = 0.2,
    js_threshold: float = 0.1,
    alpha: float = 0.05,
) -> DriftResult:
    """Drift of ``current_counts`` against the frozen ``reference_counts`` (same bins).

    Flagged (``drifted``) only when the effect size crosses its threshold (PSI at least
    ``psi_threshold`` or Jensen-Shannon distance at least ``js_threshold``) and the chi-square
    test of homogeneity is significant at ``alpha`` (docs/statistics.md). For several checks,
    pass the results through :func:`flag_drift` (Benjamini-Hochberg).
    """
    r, c = _pair(reference_counts, current_counts)
    if r.sum() == 0 or c.sum() == 0:
        return DriftResult(
            "not_enough_data",
            "no reference counts" if r.sum() == 0 else "no current counts",
            *(math.nan,) * 8,
            False,
            False,
        )
    index = psi(reference_counts, current_counts)
    js = jensen_shannon_distance(reference_counts, current_counts)
    chi2, chi2_p = chi_square_homogeneity(reference_counts, current_counts)
    ks, ks_p = binned_ks(reference_counts, current_counts)
    exceeded = index >= psi_threshold or js >= js_threshold
    drifted = exceeded and chi2_p <= alpha
    message = f"PSI {index:.3f}, JS distance {js:.3f}, p {chi2_p:.2g}" if drifted else ""
    return DriftResult(
        "ok", message, index, js, chi2, chi2_p, ks, ks_p, chi2_p, chi2_p, exceeded, drifted
    )


def flag_drift(results: Sequence[DriftResult], *, alpha: float = 0.05) -> list[DriftResult]:
    """Benjamini-Hochberg across drift checks: ``p_value_adjusted`` and ``drifted`` updated.

    Results with status ``"not_enough_data"`` are left as they are and not counted.
    """
    adjusted = benjamini_hochberg([r.p_value if r.status == "ok" else None for r in results])
    out = []
    for result, p in zip(results, adjusted, strict=True):
        if result.status != "ok":
            out.append(result)
            continue
        out.append(
            dataclasses.replace(
                result, p_value_adjusted=p, drifted=result.effect_exceeded and p <= alpha
            )
        )
    return out
