"""Heterogeneity of effects across segments: Cochran's Q (Cochran 1954, Biometrics 10)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class Heterogeneity:
    """``Q = sum w_s (d_s - d_w)^2`` with ``w_s = 1 / se_s^2`` and ``d_w`` the inverse-variance
    weighted mean; under "one common effect" ``Q ~ chi^2(k - 1)``. ``i_squared`` is
    ``max(0, (Q - df) / Q)`` (Higgins and Thompson 2002)."""

    q: float
    df: int
    p_value: float
    i_squared: float
    pooled_effect: float


def cochran_q(effects: Sequence[float], std_errors: Sequence[float]) -> Heterogeneity:
    """Cochran's Q over segments with finite effects and positive standard errors (the others
    are left out); NaN with fewer than two."""
    pairs = [
        (d, s)
        for d, s in zip(effects, std_errors, strict=True)
        if math.isfinite(d) and math.isfinite(s) and s > 0
    ]
    if len(pairs) < 2:
        return Heterogeneity(math.nan, max(len(pairs) - 1, 0), math.nan, math.nan, math.nan)
    weights = [1.0 / (s * s) for _, s in pairs]
    pooled = sum(w * d for w, (d, _) in zip(weights, pairs, strict=True)) / sum(weights)
    q = sum(w * (d - pooled) ** 2 for w, (d, _) in zip(weights, pairs, strict=True))
    df = len(pairs) - 1
    return Heterogeneity(
        q=q,
        df=df,
        p_value=float(stats.chi2.sf(q, df)),
        i_squared=max(0.0, (q - df) / q) if q > 0 else 0.0,
        pooled_effect=pooled,
    )
