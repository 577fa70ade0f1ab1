"""Power and sample size for proportion and mean metrics, fixed and sequential designs."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

from scipy import optimize, stats

from abstats.stats._always_valid import (
    confidence_sequence,
    horizon_log_threshold,
    mixing_grid,
    mixture_boundary,
    optimal_mixing_ratio,
)
from abstats.stats._design import Alternative, InferenceDesign, InferenceMethod
from abstats.stats._group_sequential import crossing_probability, spending_boundaries

MetricKind = Literal["proportion", "mean"]


def _arms(
    baseline: float, mde: float, kind: MetricKind, sd: float | None, relative: bool
) -> tuple[float, float, float, float]:
    """(control, treatment, per-unit variance control, per-unit variance treatment)."""
    treatment = baseline * (1 + mde) if relative else baseline + mde
    if kind == "proportion":
        if not (0 < baseline < 1 and 0 < treatment < 1):
            raise ValueError("proportions must lie strictly between 0 and 1")
        return baseline, treatment, baseline * (1 - baseline), treatment * (1 - treatment)
    if kind != "mean":
        raise ValueError(f"unknown metric kind {kind!r}")
    if sd is None or not sd > 0:
        raise ValueError("kind='mean' needs sd > 0 (the per-unit standard deviation)")
    return baseline, treatment, sd * sd, sd * sd


def _side_alpha(alpha: float, alternative: Alternative) -> float:
    return alpha / 2 if alternative == "two-sided" else alpha


def _null_sd(kind: MetricKind, control: float, treatment: float, variance: float) -> float:
    if kind == "proportion":
        # pooled proportion under the null (statsmodels' _std_2prop_power)
        pooled = (control + treatment) / 2
        return math.sqrt(2 * pooled * (1 - pooled))
    return math.sqrt(2 * variance)


def sample_size_per_arm(
    baseline: float,
    mde: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    kind: MetricKind = "proportion",
    sd: float | None = None,
    relative: bool = True,
    alternative: Alternative = "two-sided",
) -> float:
    """Unrounded units per arm for a fixed-horizon z test (see :func:`required_units_per_arm`)."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError("alpha and power must be in (0, 1)")
    control, treatment, var_c, var_t = _arms(baseline, mde, kind, sd, relative)
    diff = treatment - control
    if diff == 0:
        raise ValueError("mde must be non-zero")
    std_null = _null_sd(kind, control, treatment, var_c)
    std_alt = math.sqrt(var_c + var_t)
    z_alpha = float(stats.norm.isf(_side_alpha(alpha, alternative)))
    z_power = float(stats.norm.isf(power))
    if kind == "proportion":
        # Fleiss, Levin and Paik (2003) eq. 4.14 without continuity correction; equal to
        # statsmodels' samplesize_proportions_2indep_onetail
        return (max(z_alpha * std_null - z_power * std_alt, 0.0) / diff) ** 2

    # means: the exact normal power (both tails), solved like NormalIndPower.solve_power
    def shortfall(n: float) -> float:
        return fixed_power_exact(diff, n, std_alt, std_null, alpha, alternative) - power

    upper = max(((z_alpha - z_power) * std_alt / diff) ** 2 * 4, 4.0)
    return float(optimize.brentq(shortfall, 1e-9, upper, xtol=1e-12, rtol=1e-14))


def fixed_power_exact(
    diff: float,
    n: float,
    std_alternative: float,
    std_null: float,
    alpha: float,
    alternative: Alternative,
) -> float:
    """Normal power with different null and alternative standard deviations (per unit and arm
    pair; ``statsmodels.stats.power.normal_power_het``)."""
    ratio = std_null / std_alternative
    shift = diff * math.sqrt(n) / std_alternative
    side = _side_alpha(alpha, alternative)
    power = 0.0
    if alternative in ("two-sided", "greater"):
        power += float(stats.norm.sf(stats.norm.isf(side) * ratio - shift))
    if alternative in ("two-sided", "less"):
        power += float(stats.norm.cdf(stats.norm.ppf(side) * ratio - shift))
    return power


def required_units_per_arm(
    baseline: float,
    mde: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    kind: MetricKind = "proportion",
    sd: float | None = None,
    relative: bool = True,
    alternative: Alternative = "two-sided",
) -> int:
    """Units per arm for a fixed-horizon test to detect ``mde`` with ``power``.

    Proportions: ``n = (z_a sqrt(2 pbar (1 - pbar)) + z_b sqrt(p_c q_c + p_t q_t))^2 / d^2``
    (pooled variance under the null, unpooled under the alternative; Fleiss, Levin and Paik
    2003, eq. 4.14; statsmodels ``samplesize_proportions_2indep_onetail``). Means: the exact
    normal power ``NormalIndPower`` solves, with ``sd`` the per-unit standard deviation
    (``n ~ 2 sd^2 (z_a + z_b)^2 / d^2``). ``mde`` is relative to ``baseline`` when ``relative``.
    Rounded up.
    """
    return math.ceil(
        sample_size_per_arm(
            baseline,
            mde,
            alpha=alpha,
            power=power,
            kind=kind,
            sd=sd,
            relative=relative,
            alternative=alternative,
        )
        - 1e-9
    )


def fixed_power(
    baseline: float,
    mde: float,
    units_per_arm: float,
    *,
    alpha: float = 0.05,
    kind: MetricKind = "proportion",
    sd: float | None = None,
    relative: bool = True,
    alternative: Alternative = "two-sided",
) -> float:
    """Power of the fixed-horizon z test with ``units_per_arm`` per arm.

    Proportions: pooled null variance (``statsmodels.stats.proportion.power_proportions_2indep``);
    means: ``NormalIndPower().power(d / sd, n, alpha)``. Both tails for two-sided tests.
    """
    control, treatment, var_c, var_t = _arms(baseline, mde, kind, sd, relative)
    return fixed_power_exact(
        treatment - control,
        units_per_arm,
        math.sqrt(var_c + var_t),
        _null_sd(kind, control, treatment, var_c),
        alpha,
        alternative,
    )


def _looks(looks: int | Sequence[float]) -> list[float]:
    if isinstance(looks, int):
        if looks < 1:
            raise ValueError("looks must be >= 1")
        return [(k + 1) / looks for k in range(looks)]
    fractions = [float(t) for t in looks]
    if not fractions:
        raise ValueError("need at least one look")
    return fractions


def sequential_power(
    design: InferenceDesign,
    *,
    baseline: float,
    mde: float,
    kind: MetricKind = "proportion",
    sd: float | None = None,
    units_per_arm: int | None = None,
    looks: int | Sequence[float] = 20,
    relative: bool = True,
    alternative: Alternative = "two-sided",
) -> float:
    """Probability that ``design`` declares the effect ``mde`` significant by ``units_per_arm``.

    The z-statistic at information fraction ``s`` is ``N(drift sqrt(s), 1)`` with
    ``drift = effect / se_N`` (``se_N``: the unpooled standard error at ``units_per_arm`` per arm;
    with ``relative``, of ``log(t / c)`` as :func:`abstats.stats.compare` tests it); the
    probability of crossing the
    design's boundaries at ``looks`` (equally spaced when an int) is computed by recursive
    integration. ``fixed``: the normal power at the horizon; ``group_sequential``: Lan-DeMets
    boundaries at the looks :func:`abstats.stats.compare` would take; ``always_valid``: the
    mixture boundary (horizon-calibrated, or Ville's with the grid mixture above the MDE-tuned
    mixing variance when there is no horizon). ``units_per_arm`` defaults to
    ``design.max_units_per_variant``.
    """
    horizon = units_per_arm or design.max_units_per_variant
    if horizon is None:
        raise ValueError("needs units_per_arm or design.max_units_per_variant")
    control, treatment, var_c, var_t = _arms(baseline, mde, kind, sd, relative)
    if relative:  # tested on the log ratio, as compare does for positive estimates
        effect = math.log(treatment / control)
        variance = (var_t / treatment**2 + var_c / control**2) / horizon
    else:
        effect = treatment - control
        variance = (var_t + var_c) / horizon
    drift = abs(effect) / math.sqrt(variance)
    two_sided = alternative == "two-sided"
    alpha = design.alpha
    if design.method == "fixed":
        z = float(stats.norm.isf(_side_alpha(alpha, alternative)))
        far = float(stats.norm.cdf(-z - drift)) if two_sided else 0.0
        return float(stats.norm.sf(z - drift)) + far
    fractions = _looks(looks)
    # looks are fractions of `horizon`; the design's information fractions are relative to its
    # own maximum (the z-process depends only on ratios of information, so both scales mix)
    scale = horizon / design.max_units_per_variant if design.max_units_per_variant else 1.0
    if design.method == "group_sequential":
        taken: list[float] = []
        for t in fractions:
            last = taken[-1] if taken else 0.0
            s = t * scale
            if s > last and (s - last >= design.min_information_increment or s >= 1.0 > last):
                taken.append(s)
        bounds = spending_boundaries(taken, alpha, design.spending, two_sided)
        return crossing_probability(
            bounds, [s / scale for s in taken], drift=drift, two_sided=two_sided
        )
    tuning_alpha = alpha if two_sided else min(2 * alpha, 0.5)
    ratio = optimal_mixing_ratio(tuning_alpha)
    if design.max_units_per_variant is not None and design.calibrate_to_horizon:
        log_kappa = horizon_log_threshold(alpha, ratio=ratio, two_sided=two_sided)
        times: list[float] = []
        bounds_z: list[float] = []
        for t in fractions:  # no new rejection after the first look at the horizon
            s = t * scale
            times.append(t)
            bounds_z.append(mixture_boundary(min(s, 1.0), ratio=ratio, log_threshold=log_kappa))
            if s >= 1.0:
                break
        return crossing_probability(bounds_z, times, drift=drift, two_sided=two_sided)
    if design.max_units_per_variant is not None:
        # tau^2 = r V_N(design); at look t, V = V_horizon / t = V_N(design) / (t scale)
        mixing_over_v = ratio * scale
    else:
        assert design.mde_relative is not None  # InferenceDesign requires one of the two
        mde_scale = (
            math.log1p(design.mde_relative) if relative else design.mde_relative * abs(control)
        )
        mixing_over_v = ratio / (1 + ratio) * mde_scale**2 / variance
    bounds_z = []
    for t in fractions:
        # z boundary: the confidence sequence's half-width with V = 1 and tau^2 / V = q t (the
        # grid mixture :func:`abstats.stats.compare` uses above it)
        lower, _ = confidence_sequence(
            0.0,
            1.0,
            mixing_variance=mixing_grid(mixing_over_v * t),
            alpha=alpha,
            alternative="two-sided" if two_sided else "greater",
        )
        bounds_z.append(-lower)
    return crossing_probability(bounds_z, fractions, drift=drift, two_sided=two_sided)


_CANONICAL_UNITS = 1_000_000  # a horizon large enough that rounding it changes nothing


@functools.lru_cache(maxsize=64)
def required_drift(
    method: InferenceMethod,
    alpha: float,
    power: float,
    looks: int,
    alternative: Alternative = "two-sided",
) -> float:
    """The expected z-statistic at the planned sample (``effect / se_N``) at which ``method``
    reaches ``power`` with ``looks`` equally spaced looks up to it.

    The boundaries of every design depend only on information fractions (group sequential:
    Lan-DeMets spending at the looks; always valid with a horizon: the horizon-calibrated
    mixture boundary), so the power is a function of this drift alone, found once per design
    by root finding on :func:`sequential_power` of a unit-variance problem."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError("alpha and power must be in (0, 1)")
    fixed = float(stats.norm.isf(_side_alpha(alpha, alternative))) + float(stats.norm.ppf(power))
    if method == "fixed":
        return fixed
    design = InferenceDesign(
        method=method, alpha=alpha, mde_relative=0.02, max_units_per_variant=_CANONICAL_UNITS
    )
    se = math.sqrt(2.0 / _CANONICAL_UNITS)

    def shortfall(drift: float) -> float:
        return (
            sequential_power(
                design,
                baseline=0.0,
                mde=drift * se,
                kind="mean",
                sd=1.0,
                units_per_arm=_CANONICAL_UNITS,
                looks=looks,
                relative=False,
                alternative=alternative,
            )
            - power
        )

    # looking more than once never helps: the fixed design's drift is a lower bound
    low, high = max(fixed, 1e-3), max(fixed, 1e-3) * 1.3
    while shortfall(high) < 0:
        low, high = high, high * 1.3
        if high > 100:
            raise ValueError("the requested power is out of reach for this design")
    # within 1e-3 of the root, then rounded up by that much: the plan never falls short of the
    # power asked for (a 0.06% larger sample at most)
    return float(optimize.brentq(shortfall, low, high, xtol=1e-3)) + 1e-3


def sequential_units_per_arm(
    method: InferenceMethod,
    *,
    baseline: float,
    mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    kind: MetricKind = "proportion",
    sd: float | None = None,
    relative: bool = True,
    alternative: Alternative = "two-sided",
    looks: int = 20,
) -> float:
    """Unrounded planned units per arm (the design's ``max_units_per_variant``) at which a
    sequential ``method`` reaches ``power`` for ``mde``, looking ``looks`` times up to it:
    ``N = required_drift^2 * v / effect^2`` with ``effect`` and the per-unit variance ``v`` on
    the scale :func:`sequential_power` tests (``log(t / c)`` when ``relative``). ``fixed``:
    :func:`sample_size_per_arm`."""
    if method == "fixed":
        return sample_size_per_arm(
            baseline,
            mde,
            alpha=alpha,
            power=power,
            kind=kind,
            sd=sd,
            relative=relative,
            alternative=alternative,
        )
    control, treatment, var_c, var_t = _arms(baseline, mde, kind, sd, relative)
    if relative:
        effect = math.log(treatment / control)
        unit_variance = var_t / treatment**2 + var_c / control**2
    else:
        effect = treatment - control
        unit_variance = var_t + var_c
    if effect == 0:
        raise ValueError("mde must be non-zero")
    drift = required_drift(method, alpha, power, looks, alternative)
    return drift**2 * unit_variance / effect**2
