"""Sample ratio mismatch: are units split across variants as the weights say?

Two tests on the units first exposed per variant and weight epoch:

* ``sequential`` (default): the Dirichlet-multinomial Bayes factor of Lindon and Malek (2022),
  "Anytime-valid inference for multinomial count data", NeurIPS. Under the null the Bayes factor
  is a nonnegative martingale, so ``P(ever BF >= 1/alpha) <= alpha`` however often it is checked
  (Ville's inequality). Each weight epoch has its own null shares, so each epoch gets its own
  Bayes factor; their product is again a test martingale (each unit updates one factor), and
  ``p = min(1, 1 / prod BF)``, made non-increasing over checks.
* ``chi_square``: Pearson's goodness of fit on the pooled expected counts; at a fixed threshold
  its false-alarm rate grows with the number of checks (see ``tests/perf/simulate_sequential.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import special

from abstats.stats._results import SrmResult

SrmMethod = Literal["sequential", "chi_square"]

DEFAULT_THRESHOLDS: dict[str, float] = {"sequential": 0.01, "chi_square": 0.001}
# Prior concentration of the Dirichlet mixture: prior shares have standard deviation about
# sqrt(p (1 - p) / (concentration + 1)), ~1.6 points at 1,000, the scale of mismatches that matter.
DEFAULT_CONCENTRATION = 1000.0


@dataclass(frozen=True, slots=True)
class EpochCounts:
    """Units first exposed per variant during one weight epoch, and that epoch's weights.

    Weights are non-negative and need not sum to 1 (a variant's share is weight / sum).
    """

    counts: Mapping[str, int]
    weights: Mapping[str, float]


def _shares(weights: Mapping[str, float], variants: Sequence[str]) -> np.ndarray:
    w = np.array([float(weights.get(v, 0.0)) for v in variants])
    if np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise ValueError("weights must be non-negative, finite, and not all 0")
    return np.asarray(w / w.sum(), dtype=float)


def _variants(epochs: Sequence[EpochCounts]) -> list[str]:
    names: dict[str, None] = {}
    for epoch in epochs:
        for name in (*epoch.weights, *epoch.counts):
            names[name] = None
    return list(names)


def expected_counts(epochs: Sequence[EpochCounts]) -> dict[str, float]:
    """Expected units per variant: ``sum_e N_e w_{v,e} / sum_v w_{v,e}``.

    ``N_e`` is the number of units first exposed in epoch ``e``.
    """
    variants = _variants(epochs)
    total = np.zeros(len(variants))
    for epoch in epochs:
        n = sum(int(epoch.counts.get(v, 0)) for v in variants)
        total += n * _shares(epoch.weights, variants)
    return {v: float(x) for v, x in zip(variants, total, strict=True)}


def _log_bayes_factor(counts: np.ndarray, shares: np.ndarray, concentration: float) -> float:
    """log of ``B(a + x) / B(a) / prod p_i^x_i`` with ``a = concentration * p``."""
    if np.any((shares == 0) & (counts > 0)):
        return math.inf  # units in a variant that had no weight: impossible under the null
    keep = shares > 0
    x, p = counts[keep], shares[keep]
    a = concentration * p
    n = x.sum()
    log_marginal = float(
        special.gammaln(a.sum())
        - special.gammaln(a.sum() + n)
        + np.sum(special.gammaln(a + x) - special.gammaln(a))
    )
    return log_marginal - float(np.sum(x * np.log(p)))


def srm_check_epochs(
    epochs: Sequence[EpochCounts],
    *,
    method: SrmMethod = "sequential",
    threshold: float | None = None,
    previous_p_value: float | None = None,
    concentration: float = DEFAULT_CONCENTRATION,
) -> SrmResult:
    """Sample ratio mismatch over a weight history.

    Parameters
    ----------
    epochs : sequence of EpochCounts
        Per weight epoch, the units first exposed per variant and the epoch's weights.
    method : {"sequential", "chi_square"}
        ``sequential`` keeps the false-alarm probability per experiment at or below
        ``threshold`` however many times it is checked; ``chi_square`` is the classic test.
    threshold : float or None
        Flag when ``p_value <= threshold``; defaults 0.01 (sequential) and 0.001 (chi-square).
    previous_p_value : float or None
        Sequential: the previous check's ``p_value`` (the result is the running minimum).
    concentration : float
        Sequential: the Dirichlet prior ``a_i = concentration * p_i``.

    Returns
    -------
    SrmResult
        ``"not_enough_data"`` without units (never a mismatch then).
    """
    if method not in DEFAULT_THRESHOLDS:
        raise ValueError(f"unknown SRM method {method!r}")
    level = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
    if not 0 < level < 1:
        raise ValueError("threshold must be in (0, 1)")
    variants = _variants(epochs)
    observed = {v: sum(int(e.counts.get(v, 0)) for e in epochs) for v in variants}
    expected = expected_counts(epochs) if epochs else {}
    total = sum(observed.values())
    if total == 0 or len(variants) < 2:
        return SrmResult(
            "not_enough_data",
            "no units" if total == 0 else "fewer than 2 variants",
            method,
            observed,
            expected,
            math.nan,
            math.nan,
            math.nan if previous_p_value is None else previous_p_value,
            level,
            False,
        )
    obs = np.array([observed[v] for v in variants], dtype=float)
    exp = np.array([expected[v] for v in variants], dtype=float)
    if np.any((exp == 0) & (obs > 0)):
        chi2, chi2_p = math.inf, 0.0
    else:
        keep = exp > 0
        chi2 = float(np.sum((obs[keep] - exp[keep]) ** 2 / exp[keep]))
        chi2_p = float(special.chdtrc(int(keep.sum()) - 1, chi2)) if keep.sum() > 1 else 1.0
    if method == "chi_square":
        p = chi2_p
    else:
        log_bf = 0.0
        for epoch in epochs:
            counts = np.array([float(epoch.counts.get(v, 0)) for v in variants])
            if counts.sum() > 0:
                log_bf += _log_bayes_factor(counts, _shares(epoch.weights, variants), concentration)
        p = math.exp(-log_bf) if log_bf > 0 else 1.0
        if previous_p_value is not None:
            p = min(p, previous_p_value)
    mismatch = p <= level
    message = (
        f"observed {observed} differ from expected {{{', '.join(f'{v!r}: {expected[v]:.1f}' for v in variants)}}}"
        if mismatch
        else ""
    )
    return SrmResult("ok", message, method, observed, expected, chi2, chi2_p, p, level, mismatch)


def srm_check(
    observed: Mapping[str, int],
    expected: Mapping[str, float],
    *,
    method: SrmMethod = "sequential",
    threshold: float | None = None,
    previous_p_value: float | None = None,
    concentration: float = DEFAULT_CONCENTRATION,
) -> SrmResult:
    """Sample ratio mismatch with one weight epoch.

    ``expected`` may be shares, weights or expected counts: it is normalised. For a weight
    history use :func:`srm_check_epochs` (or :func:`expected_counts` to get the pooled expected
    counts for a chi-square test).
    """
    return srm_check_epochs(
        [EpochCounts(observed, expected)],
        method=method,
        threshold=threshold,
        previous_p_value=previous_p_value,
        concentration=concentration,
    )
