"""Multiple-testing adjustments (adjusted p-values, comparable with ``alpha`` directly)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _valid(p_values: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    values = np.array([math.nan if p is None else float(p) for p in p_values], dtype=float)
    finite = np.isfinite(values)
    if np.any((values[finite] < 0) | (values[finite] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    return values, finite


def holm(p_values: Sequence[float | None]) -> list[float]:
    """Holm (1979) step-down adjusted p-values (family-wise error).

    With ``p_(1) <= ... <= p_(m)``: ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``
    (Holm 1979, Scand. J. Statist. 6; the same as ``statsmodels.stats.multitest.multipletests(
    method="holm")``). ``None`` or NaN entries (tests that could not be run) stay NaN and do not
    count in ``m``.
    """
    values, finite = _valid(p_values)
    out = np.full(values.size, math.nan)
    p = values[finite]
    m = p.size
    if m:
        order = np.argsort(p, kind="mergesort")
        scaled = np.minimum((m - np.arange(m)) * p[order], 1.0)
        adjusted = np.empty(m)
        adjusted[order] = np.maximum.accumulate(scaled)
        out[finite] = np.maximum(adjusted, p)  # never below the raw p-value (rounding)
    return [float(v) for v in out]


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float]:
    """Benjamini-Hochberg (1995) adjusted p-values (false discovery rate).

    ``adj_(i) = min_{j >= i} min(1, m p_(j) / j)`` (Benjamini and Hochberg 1995, JRSS-B 57;
    ``multipletests(method="fdr_bh")``). ``None`` or NaN entries stay NaN and do not count.
    """
    values, finite = _valid(p_values)
    out = np.full(values.size, math.nan)
    p = values[finite]
    m = p.size
    if m:
        order = np.argsort(p, kind="mergesort")
        scaled = np.minimum(m * p[order] / np.arange(1, m + 1), 1.0)
        adjusted = np.empty(m)
        adjusted[order] = np.minimum.accumulate(scaled[::-1])[::-1]
        out[finite] = np.maximum(adjusted, p)  # never below the raw p-value (rounding)
    return [float(v) for v in out]
