"""Always-valid inference: normal-mixture SPRT p-values and confidence sequences.

Model: at each look the effect estimate is approximately ``N(theta, V)`` with ``V`` shrinking as
data accumulate (``V = sigma^2 / n``). The mixture likelihood ratio of ``theta`` against
``theta_0``, mixing ``theta - theta_0 ~ N(0, tau^2)``, is

    Lambda = sqrt(V / (V + tau^2)) exp(x^2 tau^2 / (2 V (V + tau^2))),   x = estimate - theta_0,

a nonnegative martingale under the null, so by Ville's inequality ``P(sup_t Lambda_t >= 1/alpha)
<= alpha``: ``p_t = min(1, 1/Lambda_t)``, made non-increasing over looks, is an always-valid
p-value, and ``{theta: Lambda_t(theta) < 1/alpha}`` is a confidence sequence. Sources: Johari,
Koomen, Pekelis and Walsh (2017), "Peeking at A/B tests", KDD, eq. (7) (mSPRT); Howard, Ramdas,
McAuliffe and Sekhon (2021), "Time-uniform, nonparametric, nonasymptotic confidence sequences",
Ann. Statist. 49, eq. (14) (normal mixture) and Proposition 6 (one-sided mixture); Waudby-Smith
et al. (2021), "Time-uniform central limit theory" for validity with estimated variances.

Grid mixture. One ``tau^2`` is tuned to one effect size (the MDE); an effect several times larger
is detected later than it could be, because at the sample where it becomes visible ``tau^2 / V``
is far from the ratio that would be optimal there. The tests therefore mix over a short
geometric grid of mixing variances ``tau_k^2 = tau^2 g^k`` (``k = 0 .. K-1``) with weights
``w_k >= 0``, ``sum w_k = 1``:

    Lambda = sum_k w_k Lambda(tau_k^2).

A convex combination of nonnegative martingales with mean 1 under the null is again one (by
linearity of conditional expectation), so Ville's inequality applies unchanged; mixing the
mixtures is the same as one mixture whose distribution of ``theta - theta_0`` is a discrete scale
mixture of normals (cf. the method of mixtures in Howard et al. 2021, section 3, and Kaufmann
and Koolen (2021), "Mixture martingales revisited with applications to sequential tests and
confidence intervals", JMLR 22). Since ``Lambda >= w_k Lambda(tau_k^2)``, the price of the grid is at most
``log(1 / w_k)`` on ``log Lambda`` for the component that fits the effect. :func:`mixing_grid`
builds the default grid: ``g = 4``, ``K = 4``, equal weights, i.e. effect sizes one, two, four
and eight times the tuned one. Effects below the tuned size are left to the tuned component: they
are not the effects the design is for.

The horizon-calibrated test below keeps a single ``tau^2``: its threshold is calibrated for that
statistic, and the bounded horizon already keeps it from running long on a large effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import optimize, special
from scipy.interpolate import PchipInterpolator

from abstats.stats._design import Alternative
from abstats.stats._group_sequential import crossing_probability


def optimal_mixing_ratio(alpha: float) -> float:
    """``r = tau^2 / V*`` that makes the two-sided confidence sequence narrowest at ``V*``.

    The half-width is ``sqrt(V (1 + r) / r (2 log(1/alpha) + log(1 + r)))`` with
    ``r = tau^2 / V``; setting the derivative in ``r`` to zero gives
    ``r = 2 log(1/alpha) + log(1 + r)`` (cf. Howard et al. 2021, eq. (15)), solved here by
    fixed-point iteration (a contraction, since ``d/dr log(1 + r) < 1``).
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    level = 2 * math.log(1 / alpha)
    r = max(level, 1.0)
    for _ in range(200):
        r_next = level + math.log1p(r)
        if abs(r_next - r) < 1e-13:
            break
        r = r_next
    return r


def tuned_mixing_variance(
    *,
    alpha: float,
    mde: float | None = None,
    variance_at_horizon: float | None = None,
) -> float:
    """Mixing variance ``tau^2`` of the normal mixture, tuned from the design.

    With ``variance_at_horizon`` (the estimate's variance at the planned maximum sample) the
    confidence sequence is made narrowest there: ``tau^2 = r V_N`` with
    ``r = optimal_mixing_ratio(alpha)``. Otherwise it is made narrowest where an effect of size
    ``mde`` is just detected: the optimal half-width there is ``sqrt(V (1 + r))``, so
    ``V* = mde^2 / (1 + r)`` and ``tau^2 = r / (1 + r) mde^2``.

    Returns NaN when neither input is usable.
    """
    r = optimal_mixing_ratio(alpha)
    if variance_at_horizon is not None and variance_at_horizon > 0:
        return r * variance_at_horizon
    if mde is not None and mde != 0 and math.isfinite(mde):
        return r / (1 + r) * mde * mde
    return math.nan


# Default grid mixture: tau^2 x {1, 4, 16, 64} with equal weights (see the module docstring).
MIXTURE_GRID_FACTOR = 4.0
MIXTURE_GRID_SIZE = 4


def mixing_grid(
    mixing_variance: float,
    *,
    factor: float = MIXTURE_GRID_FACTOR,
    size: int = MIXTURE_GRID_SIZE,
) -> tuple[float, ...]:
    """The geometric grid ``tau^2 factor^k``, ``k = 0 .. size - 1``, above a tuned ``tau^2``.

    Mixed with equal weights by :func:`always_valid_p_value` and :func:`confidence_sequence`;
    ``size = 1`` is the single normal mixture. With ``factor = 4`` the components are tuned to
    effects one, two, four and eight times the one ``tau^2`` was tuned to.
    """
    if not (factor > 1 and math.isfinite(factor)) or size < 1:
        raise ValueError("factor must be > 1 and size >= 1")
    return tuple(mixing_variance * factor**k for k in range(size))


Mixing = float | Sequence[float]


def _components(
    mixing_variance: Mixing, mixing_weights: Sequence[float] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(variances, log weights), weights normalised to sum to 1 (equal when not given)."""
    if isinstance(mixing_variance, int | float):
        variances: tuple[float, ...] = (float(mixing_variance),)
    else:
        variances = tuple(float(v) for v in mixing_variance)
    if not variances:
        raise ValueError("mixing_variance must not be empty")
    for v in variances:
        if not (v > 0 and math.isfinite(v)):
            raise ValueError("mixing_variance must be positive and finite")
    if mixing_weights is None:
        return variances, (-math.log(len(variances)),) * len(variances)
    weights = tuple(float(w) for w in mixing_weights)
    if len(weights) != len(variances):
        raise ValueError("mixing_weights must match mixing_variance")
    if not all(w >= 0 and math.isfinite(w) for w in weights) or not sum(weights) > 0:
        raise ValueError("mixing_weights must be nonnegative, finite and not all zero")
    total = sum(weights)
    return variances, tuple(math.log(w / total) if w > 0 else -math.inf for w in weights)


def _log_component_ratio(
    x: float, variance: float, mixing_variance: float, one_sided: bool
) -> float:
    total = variance + mixing_variance
    log_lr = 0.5 * math.log(variance / total) + x * x * mixing_variance / (2 * variance * total)
    if not one_sided:
        return log_lr
    # Half-normal mixture over theta - theta_0 > 0 (Howard et al. 2021, Prop. 6)
    return (
        math.log(2.0)
        + log_lr
        + float(special.log_ndtr(x * math.sqrt(mixing_variance / (variance * total))))
    )


def _log_mixture_ratio(
    x: float,
    variance: float,
    components: tuple[tuple[float, ...], tuple[float, ...]],
    one_sided: bool,
) -> float:
    """``log sum_k w_k Lambda(tau_k^2)`` (a log-sum-exp; exact for one component)."""
    variances, log_weights = components
    if len(variances) == 1:
        return _log_component_ratio(x, variance, variances[0], one_sided)
    terms = [
        lw + _log_component_ratio(x, variance, v, one_sided)
        for v, lw in zip(variances, log_weights, strict=True)
        if lw > -math.inf
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def _check_variance(variance: float) -> None:
    if not (variance > 0 and math.isfinite(variance)):
        raise ValueError("variance must be positive and finite")


def always_valid_p_value(
    estimate: float,
    variance: float,
    *,
    mixing_variance: Mixing,
    mixing_weights: Sequence[float] | None = None,
    null_value: float = 0.0,
    alternative: Alternative = "two-sided",
    previous_p_value: float | None = None,
) -> float:
    """Mixture-SPRT always-valid p-value, non-increasing over looks.

    Parameters
    ----------
    estimate, variance : float
        The effect estimate and its variance at this look.
    mixing_variance : float or sequence of float
        ``tau^2`` (see :func:`tuned_mixing_variance`), or several for a grid mixture (see
        :func:`mixing_grid`); fix them before the data, or derive them from the design, not from
        the observed effect.
    mixing_weights : sequence of float or None
        Weights of the grid's components, normalised to sum to 1; equal when None.
    null_value : float
        ``theta_0``; e.g. the negative margin of a non-inferiority test.
    alternative : {"two-sided", "greater", "less"}
        One-sided alternatives mix over ``theta > theta_0`` (``theta < theta_0``) only.
    previous_p_value : float or None
        The p-value of the previous look; the result is ``min(previous, new)`` (Johari et al.
        2017, section 3).

    Returns
    -------
    float
        In ``[0, 1]``.
    """
    _check_variance(variance)
    components = _components(mixing_variance, mixing_weights)
    x = estimate - null_value
    if alternative == "less":
        x = -x
    log_lr = _log_mixture_ratio(x, variance, components, alternative != "two-sided")
    p = math.exp(-log_lr) if log_lr > 0 else 1.0
    if previous_p_value is not None:
        p = min(p, previous_p_value)
    return min(max(p, 0.0), 1.0)


def _half_width(variance: float, mixing_variance: float, log_threshold: float) -> float:
    """Where one two-sided component reaches ``exp(log_threshold)`` (Howard et al. 2021,
    eq. (14) with ``2 log(1/alpha)`` replaced by ``2 log_threshold``)."""
    total = variance + mixing_variance
    return math.sqrt(
        variance * total / mixing_variance * (2 * log_threshold + math.log(total / variance))
    )


def confidence_sequence(
    estimate: float,
    variance: float,
    *,
    mixing_variance: Mixing,
    alpha: float,
    mixing_weights: Sequence[float] | None = None,
    alternative: Alternative = "two-sided",
) -> tuple[float, float]:
    """The normal-mixture confidence sequence at this look: ``{theta: Lambda(theta) < 1/alpha}``.

    Two-sided, one component: ``estimate +- sqrt(V (V + tau^2) / tau^2 (2 log(1/alpha) +
    log((V + tau^2)/V)))`` (Howard et al. 2021, eq. (14)). A grid mixture (``mixing_variance`` a
    sequence) and the one-sided variants (``greater``: a lower bound, ``less``: an upper bound)
    solve ``log Lambda(x) = log(1/alpha)`` for the half-width ``x`` by root finding (Brent): the
    mixture ratio increases in ``|x|`` (in ``x`` one-sided), so the set is an interval around the
    estimate. The sequence covers the effect at all looks simultaneously with probability
    ``>= 1 - alpha``, matching :func:`always_valid_p_value` with the same mixture
    (``null_value`` outside the interval iff ``p <= alpha`` at this look).
    """
    _check_variance(variance)
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    components = _components(mixing_variance, mixing_weights)
    variances, log_weights = components
    threshold = math.log(1 / alpha)
    if len(variances) == 1:
        half_width = _half_width(variance, variances[0], threshold)
    else:
        # sum_k w_k Lambda_k lies between max_k w_k Lambda_k and max_k Lambda_k, so the root lies
        # between the nearest component half-width at 1/alpha and the nearest at 1/(w_k alpha).
        low = min(_half_width(variance, v, threshold) for v in variances)
        high = min(
            _half_width(variance, v, threshold - lw)
            for v, lw in zip(variances, log_weights, strict=True)
            if lw > -math.inf
        )

        def excess_two_sided(x: float) -> float:
            return _log_mixture_ratio(x, variance, components, False) - threshold

        if high <= low:
            half_width = high
        else:
            half_width = float(
                optimize.brentq(excess_two_sided, low, high, xtol=1e-14 * max(high, 1e-300))
            )
    if alternative == "two-sided":
        return estimate - half_width, estimate + half_width

    def excess(x: float) -> float:
        return _log_mixture_ratio(x, variance, components, True) - threshold

    # Each one-sided component is at least its two-sided counterpart for x >= 0, so the root lies
    # below the two-sided half-width.
    x_star = float(optimize.brentq(excess, 0.0, half_width, xtol=1e-14 * max(half_width, 1e-300)))
    if alternative == "greater":
        return estimate - x_star, math.inf
    return -math.inf, estimate + x_star


# ------------------------------------------------------------------ calibration to a horizon
#
# With a planned maximum sample the mixing variance is tau^2 = r V_N (V_N: the estimate's
# variance at the horizon), so at information fraction s (V = V_N / s) the mixture statistic is a
# function of z = estimate / sqrt(V) and s alone:
#
#     log Lambda = -log(1 + r s) / 2 + z^2 r s / (2 (1 + r s)),
#
# i.e. "Lambda >= kappa" is the z boundary b(s) = sqrt((1 + r s) / (r s) (2 log kappa +
# log(1 + r s))). Ville's threshold kappa = 1/alpha holds for an unbounded horizon; stopping at
# s = 1 leaves slack (the A/A error is ~0.02 at alpha = 0.05), which is recovered by choosing
# kappa so that the probability of crossing b(s) anywhere on (0, 1] under continuous monitoring
# is exactly alpha. Continuous-time crossing probabilities are computed by the recursive
# integration of ``_group_sequential`` on geometrically spaced looks with Siegmund's continuity
# correction (boundary lowered by 0.5826 sqrt(delta s / s); Siegmund 1985, Sequential Analysis,
# ch. X), so the test is valid for any monitoring schedule up to the horizon. Beyond the horizon
# no new rejection is made (a decision at the maximum sample is "hold: inconclusive").

_CALIBRATION_LOOKS = 80
_CALIBRATION_START = 1e-3
_SIEGMUND_RHO = 0.5826
_LOG_KAPPA_GRID = np.linspace(0.0, 16.0, 33)  # monotone cubic: p-values within 0.5 %


def mixture_boundary(information_fraction: float, *, ratio: float, log_threshold: float) -> float:
    """z boundary of the normal mixture with ``tau^2 = ratio * V_N`` at fraction ``s``.

    ``sqrt((1 + r s) / (r s) (2 log kappa + log(1 + r s)))`` (the two-sided mixture of
    :func:`always_valid_p_value` written in ``z = estimate / sqrt(V)`` with ``V = V_N / s``).
    """
    rs = ratio * information_fraction
    return math.sqrt((1 + rs) / rs * max(2 * log_threshold + math.log1p(rs), 0.0))


@lru_cache(maxsize=32)
def _calibration(ratio: float, two_sided: bool) -> tuple[float, float, PchipInterpolator]:
    """``log P(sup_{s <= 1} Lambda_s >= kappa)`` as a monotone cubic in ``log kappa``
    (continuous looks), with its values at both ends of the grid."""
    s = np.geomspace(_CALIBRATION_START, 1.0, _CALIBRATION_LOOKS)
    step = np.diff(np.concatenate(([0.0], s)))
    correction = _SIEGMUND_RHO * np.sqrt(step / s)
    log_alpha = []
    for log_kappa in _LOG_KAPPA_GRID:
        rs = ratio * s
        bounds = np.sqrt((1 + rs) / rs * (2 * log_kappa + np.log1p(rs))) - correction
        probability = crossing_probability(
            [float(b) for b in bounds], [float(v) for v in s], two_sided=two_sided, resolution=8
        )
        log_alpha.append(math.log(min(max(probability, 1e-300), 1.0)))
    # crossing probabilities decrease in kappa; enforce it against integration noise
    values = np.minimum.accumulate(np.asarray(log_alpha))
    return float(values[0]), float(values[-1]), PchipInterpolator(_LOG_KAPPA_GRID, values)


def _tail_slope(curve: PchipInterpolator) -> float:
    return float(curve(_LOG_KAPPA_GRID[-1], 1))


def horizon_p_value(log_mixture_ratio: float, *, ratio: float, two_sided: bool) -> float:
    """P-value of an observed mixture statistic under continuous monitoring up to the horizon.

    ``P_0(sup_{s <= 1} Lambda_s >= Lambda_obs)``: a monotone cubic (Fritsch-Carlson) in
    ``log kappa`` through the calibration grid, extrapolated linearly beyond it, and never above
    Ville's bound ``1 / Lambda_obs``.
    """
    _, last, curve = _calibration(round(ratio, 10), two_sided)
    top = float(_LOG_KAPPA_GRID[-1])
    if log_mixture_ratio <= 0.0:
        return 1.0
    if log_mixture_ratio <= top:
        value = float(curve(log_mixture_ratio))
    else:
        value = last + _tail_slope(curve) * (log_mixture_ratio - top)
    return min(math.exp(value), math.exp(-log_mixture_ratio), 1.0)


def horizon_log_threshold(alpha: float, *, ratio: float, two_sided: bool) -> float:
    """``log kappa`` whose crossing probability up to the horizon is ``alpha`` (the inverse of
    :func:`horizon_p_value`)."""
    first, last, curve = _calibration(round(ratio, 10), two_sided)
    target = math.log(alpha)
    top = float(_LOG_KAPPA_GRID[-1])
    if target >= first:
        return 0.0
    if target >= last:
        return float(optimize.brentq(lambda x: float(curve(x)) - target, 0.0, top, xtol=1e-12))
    return min(top + (target - last) / _tail_slope(curve), -target)


def horizon_test(
    z: float,
    information_fraction: float,
    *,
    ratio: float,
    alpha: float,
    alternative: Alternative,
    previous_p_value: float | None = None,
) -> tuple[float, float]:
    """The horizon-calibrated mixture test at one look: ``(p_value, z_boundary)``.

    ``information_fraction`` is capped at 1. For one-sided alternatives only estimates in the
    alternative's direction count (``p = 1`` otherwise) and the calibration is one-sided.
    """
    s = min(information_fraction, 1.0)
    two_sided = alternative == "two-sided"
    directed = z if alternative == "greater" else -z
    rs = ratio * s
    log_lr = -0.5 * math.log1p(rs) + z * z * rs / (2 * (1 + rs))
    p = horizon_p_value(log_lr, ratio=ratio, two_sided=two_sided)
    if not two_sided and directed <= 0:
        p = 1.0
    if previous_p_value is not None:
        p = min(p, previous_p_value)
    boundary = mixture_boundary(
        s,
        ratio=ratio,
        log_threshold=horizon_log_threshold(alpha, ratio=ratio, two_sided=two_sided),
    )
    return p, boundary
