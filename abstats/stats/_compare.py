"""Treatment-versus-control comparisons under a fixed, group-sequential or always-valid design.

Every comparison reduces each arm to an estimate and its variance (per weight epoch), combines
epochs with fixed weights, forms the absolute effect ``t - c`` (variance ``V_t + V_c``) and the
relative effect ``t / c - 1`` (delta method: ``V_t / c^2 + t^2 V_c / c^4``; e.g. Deng, Knoblich
and Lu 2018, section 3.3), and hands ``(estimate, variance)`` to the design's inference. Relative
effects are tested on ``log(t / c)`` (variance ``V_t / t^2 + V_c / c^2``) whenever both estimates
are positive, and the interval is mapped back by ``exp(.) - 1``: the log ratio is much closer to
normal in small samples (Katz et al. 1978), which matters when every early look can decide.

* ``fixed``: Newcombe's interval for an absolute difference of proportions (valid at 0 and 1),
  Welch's t for an absolute difference of means, a normal interval otherwise;
* ``always_valid``: the normal-mixture SPRT and its confidence sequence
  (:mod:`abstats.stats._always_valid`);
* ``group_sequential``: Lan-DeMets boundaries at the information fractions of the looks taken so
  far (:mod:`abstats.stats._group_sequential`), repeated confidence intervals
  ``estimate +- b_k se`` (Jennison and Turnbull 2000, ch. 9) and repeated p-values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from scipy import optimize, special, stats

from abstats.stats._always_valid import (
    always_valid_p_value,
    confidence_sequence,
    horizon_test,
    mixing_grid,
    optimal_mixing_ratio,
    tuned_mixing_variance,
)
from abstats.stats._classification import auc_delong
from abstats.stats._design import (
    Alternative,
    InferenceDesign,
    SequentialState,
    SpendingKind,
    norm_isf,
)
from abstats.stats._group_sequential import spending_boundaries
from abstats.stats._quantile import clustered_quantile
from abstats.stats._results import ComparisonResult, Status
from abstats.stats._sufficient import (
    BinnedScores,
    ClusteredHistogram,
    MeanStats,
    ProportionStats,
    RatioStats,
)
from abstats.stats._tests import newcombe_bounds, newcombe_p_value

ArmStats = MeanStats | ProportionStats | RatioStats | BinnedScores | ClusteredHistogram
Weighting = Literal["stratum_size", "cmh", "ipw"]

_NAN = math.nan
_P_VALUE_RESOLUTION = 8  # grid parameter for repeated p-values (the decision uses the fine grid)


@dataclass(frozen=True, slots=True)
class _Arm:
    """One arm reduced to an estimate and the variance of that estimate."""

    estimate: float
    variance: float
    units: int
    counts: tuple[float, float] | None = None  # (successes, trials), possibly effective
    df: float | None = None  # degrees of freedom of a mean's variance (Welch)


@dataclass(frozen=True, slots=True)
class _Unusable:
    status: Status
    message: str


def _agresti_caffo_variance(successes: float, trials: float) -> float:
    # Agresti and Caffo (2000): one success and one failure added, so the variance stays
    # positive at 0 and 1 and the normal interval keeps its coverage there.
    p = (successes + 1) / (trials + 2)
    return p * (1 - p) / (trials + 2)


def _arm(stats_: ArmStats, quantile: float | None, alpha: float) -> _Arm | _Unusable:
    if isinstance(stats_, ProportionStats):
        if stats_.n < 1:
            return _Unusable("not_enough_data", "no units")
        return _Arm(
            stats_.proportion,
            _agresti_caffo_variance(stats_.successes, stats_.n),
            stats_.n,
            counts=(float(stats_.successes), float(stats_.n)),
        )
    if isinstance(stats_, MeanStats):
        if stats_.n < 2:
            return _Unusable("not_enough_data", "fewer than 2 units")
        return _Arm(stats_.mean, stats_.variance / stats_.n, stats_.n, df=stats_.n - 1.0)
    if isinstance(stats_, RatioStats):
        if stats_.n < 2:
            return _Unusable("not_enough_data", "fewer than 2 units")
        if stats_.denominator_sum <= 0:
            return _Unusable("not_enough_data", "the denominator sums to 0")
        ratio, variance = stats_.ratio, stats_.variance_of_ratio
        if not stats_.is_proportion:
            return _Arm(ratio, variance, stats_.n)
        if not 0 <= ratio <= 1:
            return _Unusable("degenerate", "is_proportion but the ratio is outside [0, 1]")
        # Effective counts (Rao and Scott 1992): the clustered variance over the binomial one is
        # the design effect; dividing counts by it and applying Agresti-Caffo / Newcombe keeps the
        # interval valid at 0 and 1 (where the delta-method variance is 0).
        trials = stats_.denominator_sum
        binomial = ratio * (1 - ratio) / trials
        design_effect = max(variance / binomial, 1.0) if binomial > 0 else 1.0
        effective = (stats_.numerator_sum / design_effect, trials / design_effect)
        return _Arm(
            ratio,
            _agresti_caffo_variance(*effective),
            stats_.n,
            counts=effective,
        )
    if isinstance(stats_, BinnedScores):
        auc = auc_delong(stats_)
        if not math.isfinite(auc.variance):
            return _Unusable("not_enough_data", "needs at least 2 positive and 2 negative labels")
        return _Arm(auc.auc, auc.variance, stats_.n_units)
    if quantile is None:
        raise ValueError("comparing ClusteredHistogram needs quantile=")
    if stats_.units < 2 or stats_.requests == 0:
        return _Unusable("not_enough_data", "fewer than 2 units with requests")
    estimate = clustered_quantile(stats_, quantile, alpha=alpha)
    if not (math.isfinite(estimate.estimate) and math.isfinite(estimate.standard_error)):
        return _Unusable("degenerate", "the quantile falls in the open last bin")
    return _Arm(estimate.estimate, estimate.standard_error**2, stats_.units)


def _combine(arms: Sequence[_Arm], weights: Sequence[float]) -> _Arm:
    if len(arms) == 1:
        return arms[0]
    return _Arm(
        sum(w * a.estimate for a, w in zip(arms, weights, strict=True)),
        sum(w * w * a.variance for a, w in zip(arms, weights, strict=True)),
        sum(a.units for a in arms),
    )


@dataclass(frozen=True, slots=True)
class _Inference:
    p_value: float
    ci_lower: float
    ci_upper: float
    reject: bool
    boundary: float | None = None


def _one_sided(alternative: Alternative) -> bool:
    return alternative != "two-sided"


def _normal_p(z: float, alternative: Alternative) -> float:
    if alternative == "two-sided":
        return float(2 * special.ndtr(-abs(z)))
    return float(special.ndtr(-z if alternative == "greater" else z))


def _interval(estimate: float, half: float, alternative: Alternative) -> tuple[float, float]:
    if alternative == "greater":
        return estimate - half, math.inf
    if alternative == "less":
        return -math.inf, estimate + half
    return estimate - half, estimate + half


def _fixed(
    estimate: float,
    variance: float,
    *,
    alpha: float,
    alternative: Alternative,
    null_value: float,
    counts: tuple[tuple[float, float], tuple[float, float]] | None,
    df: float | None,
) -> _Inference:
    critical_alpha = alpha / 2 if alternative == "two-sided" else alpha
    if counts is not None:
        control, treatment = counts
        p = newcombe_p_value(control, treatment, null_value=null_value, alternative=alternative)
        lower, upper = newcombe_bounds(control, treatment, float(norm_isf(critical_alpha)))
        if alternative == "greater":
            upper = math.inf
        elif alternative == "less":
            lower = -math.inf
        return _Inference(p, lower, upper, p <= alpha)
    se = math.sqrt(variance)
    z = (estimate - null_value) / se
    if df is not None:
        if alternative == "two-sided":
            p = float(2 * stats.t.sf(abs(z), df))
        else:
            p = float(stats.t.sf(z if alternative == "greater" else -z, df))
        q = float(stats.t.isf(critical_alpha, df))
    else:
        p = _normal_p(z, alternative)
        q = float(norm_isf(critical_alpha))
    lower, upper = _interval(estimate, q * se, alternative)
    return _Inference(p, lower, upper, p <= alpha)


def _always_valid(
    estimate: float,
    variance: float,
    *,
    alpha: float,
    alternative: Alternative,
    null_value: float,
    mixing_variance: tuple[float, ...],
    previous_p: float | None,
) -> _Inference:
    p = always_valid_p_value(
        estimate,
        variance,
        mixing_variance=mixing_variance,
        null_value=null_value,
        alternative=alternative,
        previous_p_value=previous_p,
    )
    lower, upper = confidence_sequence(
        estimate, variance, mixing_variance=mixing_variance, alpha=alpha, alternative=alternative
    )
    return _Inference(p, lower, upper, p <= alpha)


@lru_cache(maxsize=1024)
def _repeated_p_value(
    fractions: tuple[float, ...], z: float, kind: SpendingKind, one_sided: bool
) -> float:
    """Smallest alpha at which the last look's boundary is crossed (Jennison and Turnbull 2000,
    section 9.1), on a coarser integration grid than the decision itself."""

    def excess(log_alpha: float) -> float:
        b = spending_boundaries(
            fractions,
            math.exp(log_alpha),
            kind,
            not one_sided,
            resolution=_P_VALUE_RESOLUTION,
        )[-1]
        return min(b, 40.0) - z

    # The boundary at level a is at least the nominal z of a, so the repeated p-value is at
    # least the nominal one: search above it.
    nominal = float(2 * special.ndtr(-z) if not one_sided else special.ndtr(-z))
    low, high = math.log(max(min(nominal, 1.0), 1e-15)), math.log(1 - 1e-9)
    if low >= high or excess(high) > 0:
        return 1.0
    if excess(low) <= 0:
        return math.exp(low)
    return math.exp(optimize.brentq(excess, low, high, xtol=1e-5))  # p to 1e-5 relative


def _horizon_calibrated(
    estimate: float,
    variance: float,
    *,
    alpha: float,
    alternative: Alternative,
    ratio: float,
    information: float,
    past_horizon: bool,
    previous_p: float | None,
) -> _Inference:
    se = math.sqrt(variance)
    p, boundary = horizon_test(
        estimate / se,
        information,
        ratio=ratio,
        alpha=alpha,
        alternative=alternative,
        previous_p_value=previous_p,
    )
    if past_horizon:  # the look at the horizon was taken: no new rejection
        p = previous_p if previous_p is not None else 1.0
    lower, upper = _interval(estimate, boundary * se, alternative)
    return _Inference(p, lower, upper, p <= alpha, boundary)


def _group_sequential(
    estimate: float,
    variance: float,
    *,
    design: InferenceDesign,
    alternative: Alternative,
    null_value: float,
    fractions: tuple[float, ...],
    new_look: bool,
    previous_p: float | None,
) -> _Inference:
    one_sided = _one_sided(alternative)
    boundary = spending_boundaries(fractions, design.alpha, design.spending, not one_sided)[-1]
    se = math.sqrt(variance)
    z = (estimate - null_value) / se
    z_directed = abs(z) if alternative == "two-sided" else (z if alternative == "greater" else -z)
    lower, upper = _interval(estimate, boundary * se, alternative)
    crossed_before = previous_p is not None and previous_p <= design.alpha
    if not new_look:
        p = previous_p if previous_p is not None else 1.0
        return _Inference(p, lower, upper, crossed_before, boundary)
    crossed = z_directed >= boundary
    p = _repeated_p_value(fractions, z_directed, design.spending, one_sided)
    # The decision rests on the fine-grid boundary; keep the p-value consistent with it.
    p = min(p, design.alpha) if crossed else max(p, math.nextafter(design.alpha, 1.0))
    if previous_p is not None:
        p = min(p, previous_p)
    return _Inference(p, lower, upper, crossed or crossed_before, boundary)


def _expm1(x: float) -> float:
    return math.expm1(x) if x < 700.0 else math.inf


def _information_fraction(units_c: int, units_t: int, max_units: int) -> float:
    # Information of a two-sample comparison is proportional to 1 / (1/n_c + 1/n_t); at the
    # horizon both arms have max_units.
    return 2.0 / (max_units * (1.0 / units_c + 1.0 / units_t))


def _validate(alternative: Alternative, margin: float | None) -> None:
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"unknown alternative {alternative!r}")
    if margin is not None:
        if not (margin > 0 and math.isfinite(margin)):
            raise ValueError("margin must be positive")
        if alternative == "two-sided":
            raise ValueError(
                "a non-inferiority margin needs a one-sided alternative: 'greater' when higher "
                "is better, 'less' when lower is better"
            )


def compare(
    control: ArmStats,
    treatment: ArmStats,
    *,
    design: InferenceDesign,
    alternative: Alternative = "two-sided",
    relative: bool = True,
    margin: float | None = None,
    margin_relative: bool = True,
    previous: SequentialState | None = None,
    quantile: float | None = None,
) -> ComparisonResult:
    """Compare ``treatment`` with ``control`` on one metric.

    Parameters
    ----------
    control, treatment : MeanStats, ProportionStats, RatioStats, BinnedScores or
        ClusteredHistogram
        Both of the same type (AUC for :class:`BinnedScores`, the ``quantile`` for
        :class:`ClusteredHistogram`).
    design : InferenceDesign
        Fixed, group-sequential or always-valid inference and its parameters.
    alternative : {"two-sided", "greater", "less"}
        ``greater``: treatment above control. One-sided tests use ``design.alpha`` one-sided.
    relative : bool
        Report the interval and p-value for the relative effect ``t / c - 1`` (else ``t - c``);
        inference runs on ``log(t / c)`` when both estimates are positive (test
        ``"log_ratio"``), else on the lift itself (``"delta_method"``).
    margin : float or None
        Non-inferiority margin (> 0), e.g. 0.05 for "5 %" or 0.002 absolute; needs a one-sided
        ``alternative`` giving the good direction. With ``greater`` the test rejects
        ``effect <= -margin``; with ``less`` it rejects ``effect >= margin``.
    margin_relative : bool
        Whether ``margin`` is on the relative scale. The non-inferiority test uses the margin's
        scale whatever ``relative`` is.
    previous : SequentialState or None
        ``result.state`` of the previous look at this comparison (always-valid p-values never
        increase; group-sequential looks accumulate).
    quantile : float or None
        For :class:`ClusteredHistogram`: which quantile (0.5, 0.9, 0.95, 0.99).

    Returns
    -------
    ComparisonResult
        Never raises on empty or degenerate data: such input gives status
        ``"not_enough_data"`` or ``"degenerate"`` and is never significant. Proportions at 0 or
        1 are not degenerate: 0 errors of 15,000 in both arms proves non-inferiority at an
        absolute margin of 0.01.

    Raises
    ------
    ValueError
        For invalid arguments (mismatched types, a margin with a two-sided alternative).
    """
    return compare_stratified(
        [(control, treatment)],
        design=design,
        alternative=alternative,
        relative=relative,
        margin=margin,
        margin_relative=margin_relative,
        previous=previous,
        quantile=quantile,
    )


def _test_name(stats_: ArmStats, *, exact: bool, relative: bool, method: str) -> str:
    if isinstance(stats_, BinnedScores):
        return "delong"
    if isinstance(stats_, ClusteredHistogram):
        return "clustered_quantile"
    if relative:
        return "log_ratio"
    if isinstance(stats_, MeanStats):
        return "welch" if exact and method == "fixed" else "normal"
    if isinstance(stats_, ProportionStats) or (
        isinstance(stats_, RatioStats) and stats_.is_proportion
    ):
        return "newcombe" if exact and method == "fixed" else "agresti_caffo_normal"
    return "delta_method"


def _strata_weights(
    kept: Sequence[tuple[int, _Arm, _Arm]],
    weighting: Weighting,
    assignment_probabilities: Sequence[tuple[float, float]] | None,
) -> tuple[list[float], list[float]]:
    if weighting == "stratum_size":
        sizes = [c.units + t.units for _, c, t in kept]
        total = float(sum(sizes))
        shares = [s / total for s in sizes]
        return shares, shares
    if weighting == "cmh":
        # Cochran-Mantel-Haenszel weights n_c n_t / (n_c + n_t) (Mantel and Haenszel 1959): the
        # inverse of the variance factor 1/n_c + 1/n_t of an epoch's difference, so an epoch
        # with a 5/95 split counts by its small arm, not by its total. The same weights for both
        # arms, so a baseline that drifts between epochs still cancels.
        raw = [c.units * t.units / (c.units + t.units) for _, c, t in kept]
        total = float(sum(raw))
        shares = [r / total for r in raw]
        return shares, shares
    if weighting != "ipw":
        raise ValueError(f"unknown weighting {weighting!r}")
    if assignment_probabilities is None:
        raise ValueError("weighting='ipw' needs assignment_probabilities")
    # Hajek weights: each arm's units weighted by 1 / P(assigned to that arm) in their epoch
    # (Horvitz and Thompson 1952; Hajek 1971), normalised within the arm.
    raw_c = [c.units / assignment_probabilities[i][0] for i, c, _ in kept]
    raw_t = [t.units / assignment_probabilities[i][1] for i, _, t in kept]
    return [w / sum(raw_c) for w in raw_c], [w / sum(raw_t) for w in raw_t]


def compare_stratified(
    strata: Sequence[tuple[ArmStats, ArmStats]],
    *,
    design: InferenceDesign,
    alternative: Alternative = "two-sided",
    relative: bool = True,
    margin: float | None = None,
    margin_relative: bool = True,
    previous: SequentialState | None = None,
    quantile: float | None = None,
    weighting: Weighting = "stratum_size",
    assignment_probabilities: Sequence[tuple[float, float]] | None = None,
) -> ComparisonResult:
    """Compare across weight epochs (strata) so that a time trend during a ramp is not an effect.

    Each stratum is one weight epoch, ``(control_stats, treatment_stats)`` of the units first
    exposed in it. Per arm the estimate is ``sum_e w_e estimate_e`` with variance
    ``sum_e w_e^2 Var_e`` (post-stratification with the weights held fixed; Miratrix, Sekhon and
    Yu 2013, JRSS-B 75):

    * ``weighting="stratum_size"``: ``w_e`` = the epoch's share of all units, the same for
      both arms, so a baseline that drifts between epochs cancels from the difference;
    * ``weighting="cmh"``: ``w_e`` proportional to ``n_c n_t / (n_c + n_t)`` of the epoch, the
      same for both arms (Cochran-Mantel-Haenszel; near-optimal when an epoch's variances are
      alike across arms, and far more efficient than stratum size under a 5/25/50 ramp);
    * ``weighting="ipw"``: Hajek inverse-probability weights, ``w_{a,e}`` proportional to
      ``units_{a,e} / pi_{a,e}`` with ``assignment_probabilities[e] = (pi_control,
      pi_treatment)``, the shares the epoch assigned.

    Strata where an arm has too little data are left out (noted in ``message``). With one
    stratum this is :func:`compare`. Other parameters as for :func:`compare`.
    """
    _validate(alternative, margin)
    state = previous or SequentialState()

    def unusable(
        status: Status,
        message: str,
        *,
        test: str = "",
        units: tuple[int, int] = (0, 0),
        arms: tuple[_Arm, _Arm] | None = None,
    ) -> ComparisonResult:
        c = arms[0].estimate if arms else _NAN
        t = arms[1].estimate if arms else _NAN
        return ComparisonResult(
            status=status,
            message=message,
            method=design.method,
            test=test,
            alternative=alternative,
            alpha=design.alpha,
            effect_scale="relative" if relative else "absolute",
            control_estimate=c,
            treatment_estimate=t,
            control_units=units[0],
            treatment_units=units[1],
            absolute_effect=t - c,
            relative_effect=t / c - 1 if c != 0 else _NAN,
            standard_error=_NAN,
            ci_lower=_NAN,
            ci_upper=_NAN,
            p_value=_NAN,
            significant=False,
            margin=margin,
            margin_relative=margin_relative,
            state=state,
        )

    if not strata:
        return unusable("not_enough_data", "no strata")
    first = strata[0][0]
    for c_stats, t_stats in strata:
        if type(c_stats) is not type(first) or type(t_stats) is not type(first):
            raise ValueError("control and treatment statistics must all be of one type")
    if assignment_probabilities is not None and len(assignment_probabilities) != len(strata):
        raise ValueError("need one pair of assignment probabilities per stratum")

    units = (
        sum(_units(c) for c, _ in strata),
        sum(_units(t) for _, t in strata),
    )
    notes: list[str] = []
    kept: list[tuple[int, _Arm, _Arm]] = []
    first_problem: _Unusable | None = None
    for index, (c_stats, t_stats) in enumerate(strata):
        c_arm = _arm(c_stats, quantile, design.alpha)
        t_arm = _arm(t_stats, quantile, design.alpha)
        if isinstance(c_arm, _Unusable) or isinstance(t_arm, _Unusable):
            problem = c_arm if isinstance(c_arm, _Unusable) else t_arm
            assert isinstance(problem, _Unusable)
            first_problem = first_problem or problem
            if len(strata) > 1:
                notes.append(f"stratum {index} left out: {problem.message}")
            continue
        kept.append((index, c_arm, t_arm))

    test = _test_name(first, exact=len(kept) == 1, relative=relative, method=design.method)
    minimum = max(design.min_units_per_variant, 2)
    if min(units) < minimum:
        return unusable(
            "not_enough_data",
            f"fewer than {minimum} units in an arm (control {units[0]}, treatment {units[1]})",
            test=test,
            units=units,
        )
    if not kept:
        assert first_problem is not None
        return unusable(first_problem.status, first_problem.message, test=test, units=units)

    w_c, w_t = _strata_weights(kept, weighting, assignment_probabilities)
    c_arm = _combine([c for _, c, _ in kept], w_c)
    t_arm = _combine([t for _, _, t in kept], w_t)
    exact = len(kept) == 1
    kept_units = (c_arm.units, t_arm.units)

    if min(kept_units) < minimum:
        return unusable(
            "not_enough_data",
            "; ".join(["too few units in the usable strata", *notes]),
            test=test,
            units=units,
            arms=(c_arm, t_arm),
        )

    # Effects and their variances on both scales.
    c, t = c_arm.estimate, t_arm.estimate
    absolute = (t - c, t_arm.variance + c_arm.variance)
    relative_effect: tuple[float, float] | None = None
    log_ratio: tuple[float, float] | None = None
    if c != 0 and math.isfinite(c):
        relative_effect = (
            t / c - 1,
            t_arm.variance / (c * c) + t * t * c_arm.variance / c**4,
        )
        if t > 0 and c > 0:
            # Inference on the relative scale runs on log(t / c), whose sampling distribution is
            # closer to normal than that of t / c - 1 (Katz, Baptista, Azen and Pike 1978);
            # intervals map back with exp(.) - 1.
            log_ratio = (
                math.log(t / c),
                t_arm.variance / (t * t) + c_arm.variance / (c * c),
            )
    counts = (
        (c_arm.counts, t_arm.counts)
        if exact and c_arm.counts is not None and t_arm.counts is not None
        else None
    )
    df = None
    if exact and c_arm.df is not None and t_arm.df is not None and absolute[1] > 0:
        # Welch-Satterthwaite degrees of freedom (Welch 1947)
        vc, vt = c_arm.variance, t_arm.variance
        df = (vc + vt) ** 2 / (vc * vc / c_arm.df + vt * vt / t_arm.df)

    information = (
        _information_fraction(kept_units[0], kept_units[1], design.max_units_per_variant)
        if design.max_units_per_variant is not None
        else None
    )
    # Group-sequential looks: a new look when information grew enough (or at the horizon).
    fractions = state.information_fractions
    new_look = True
    if design.method == "group_sequential":
        assert information is not None
        last = fractions[-1] if fractions else 0.0
        new_look = information > last and (
            information - last >= design.min_information_increment or (information >= 1.0 > last)
        )
        if new_look:
            fractions = (*fractions, information)
        elif not fractions:  # before the first look
            return unusable(
                "not_enough_data",
                f"information fraction {information:.4f} is below the first look "
                f"({design.min_information_increment})",
                test=test,
                units=units,
                arms=(c_arm, t_arm),
            )

    def infer(
        effect: tuple[float, float],
        *,
        side: Alternative,
        null_value: float,
        previous_p: float | None,
        mde: float | None,
        absolute_scale: bool,
        tune_to_horizon: bool,
    ) -> _Inference:
        estimate, variance = effect
        if design.method == "fixed":
            return _fixed(
                estimate,
                variance,
                alpha=design.alpha,
                alternative=side,
                null_value=null_value,
                counts=counts if absolute_scale else None,
                df=df if absolute_scale else None,
            )
        if design.method == "group_sequential":
            return _group_sequential(
                estimate,
                variance,
                design=design,
                alternative=side,
                null_value=null_value,
                fractions=fractions,
                new_look=new_look,
                previous_p=previous_p,
            )
        tuning_alpha = min(2 * design.alpha, 0.5) if side != "two-sided" else design.alpha
        if tune_to_horizon and information is not None and design.calibrate_to_horizon:
            return _horizon_calibrated(
                estimate,
                variance,
                alpha=design.alpha,
                alternative=side,
                ratio=optimal_mixing_ratio(tuning_alpha),
                information=information,
                past_horizon=bool(fractions) and fractions[-1] >= 1.0,
                previous_p=previous_p,
            )
        # Superiority: narrowest where the MDE is just detected (or, without calibration, at the
        # horizon, where the variance is the current one times the information fraction).
        # Non-inferiority: narrowest where the margin is just excluded.
        at_horizon = variance * information if tune_to_horizon and information else None
        mixing = tuned_mixing_variance(alpha=tuning_alpha, mde=mde, variance_at_horizon=at_horizon)
        if not math.isfinite(mixing):
            # No usable effect size (e.g. a relative MDE of a control at 0): narrowest now.
            mixing = optimal_mixing_ratio(tuning_alpha) * variance
        # A grid mixture from the tuned tau^2 upwards: larger effects stop early too.
        return _always_valid(
            estimate,
            variance,
            alpha=design.alpha,
            alternative=side,
            null_value=null_value,
            mixing_variance=mixing_grid(mixing),
            previous_p=previous_p,
        )

    use_log = relative and log_ratio is not None and log_ratio[1] > 0
    if test == "log_ratio" and not use_log:
        test = "delta_method"  # a non-positive estimate: the lift itself, by the delta method
    chosen = (log_ratio if use_log else relative_effect) if relative else absolute
    mde = None
    if not relative and design.mde_absolute is not None:
        mde = design.mde_absolute
    elif design.mde_relative is not None:
        if not relative:
            mde = design.mde_relative * abs(c)
        else:
            mde = math.log1p(design.mde_relative) if use_log else design.mde_relative

    status: Status = "ok"
    effect_scale = "relative" if relative else "absolute"
    messages: list[str] = []
    p_value, lower, upper, significant, boundary, se = _NAN, _NAN, _NAN, False, None, _NAN
    new_p: float | None = state.p_value
    looked = False
    if chosen is None:
        status = "degenerate"
        messages.append("the control estimate is 0: the relative effect is undefined")
    elif not chosen[1] > 0:
        status = "degenerate"
        messages.append("zero variance in both arms: no evidence either way")
    else:
        inference = infer(
            chosen,
            side=alternative,
            null_value=0.0,
            previous_p=state.p_value,
            mde=mde,
            absolute_scale=not relative,
            tune_to_horizon=True,
        )
        looked = True
        p_value, lower, upper = inference.p_value, inference.ci_lower, inference.ci_upper
        significant, boundary, se = inference.reject, inference.boundary, math.sqrt(chosen[1])
        if use_log:
            lower, upper = _expm1(lower), _expm1(upper)
            se *= t / c  # delta method: se(t/c - 1) = (t/c) se(log(t/c))
        new_p = p_value
        if design.method != "fixed" and alternative == "two-sided":
            lower, upper = _intersect(lower, upper, state.interval, effect_scale)
            # significance is read off the interval, so "better" and "worse" always quote an
            # interval that excludes zero on that side (the running-minimum p-value agrees)
            if math.isfinite(lower) and math.isfinite(upper):
                significant = significant and (lower > 0 or upper < 0)

    before_horizon = (
        design.method == "fixed"
        and design.max_units_per_variant is not None
        and min(kept_units) < design.max_units_per_variant
    )
    if before_horizon and status == "ok":
        status = "before_horizon"
        messages.append(
            f"fixed design: no decision before {design.max_units_per_variant} units per variant"
        )
    if status != "ok":
        significant = False
    if design.method == "group_sequential" and not new_look:
        messages.append(
            "no new interim look (information grew by less than "
            f"{design.min_information_increment}); the previous look's decision stands"
        )

    non_inferior: bool | None = None
    ni_p: float | None = None
    new_ni_p = state.non_inferiority_p_value
    if margin is not None:
        null_value = -margin if alternative == "greater" else margin
        scale = relative_effect if margin_relative else absolute
        if margin_relative and log_ratio is not None and log_ratio[1] > 0 and null_value > -1:
            scale, null_value = log_ratio, math.log1p(null_value)
        if scale is None:
            messages.append("relative margin undefined with the control at 0")
        elif not scale[1] > 0:
            messages.append("zero variance: non-inferiority cannot be shown")
        elif not before_horizon:
            ni = infer(
                scale,
                side=alternative,
                null_value=null_value,
                previous_p=state.non_inferiority_p_value,
                mde=abs(null_value),
                absolute_scale=not margin_relative,
                tune_to_horizon=False,
            )
            non_inferior, ni_p = ni.reject, ni.p_value
            new_ni_p = ni_p
            looked = True

    if design.method == "group_sequential":
        kept_fractions = fractions if looked else state.information_fractions
    elif design.method == "always_valid" and information is not None:
        kept_fractions = (information,)  # only whether the horizon was passed matters
    else:
        kept_fractions = ()
    kept_interval = state.interval
    if design.method != "fixed" and math.isfinite(lower) and math.isfinite(upper):
        kept_interval = (lower, upper, effect_scale)
    next_state = SequentialState(
        new_p if design.method != "fixed" else None,
        new_ni_p if design.method != "fixed" else None,
        kept_fractions,
        kept_interval if design.method != "fixed" else None,
    )
    return ComparisonResult(
        status=status,
        message="; ".join(messages + notes),
        method=design.method,
        test=test,
        alternative=alternative,
        alpha=design.alpha,
        effect_scale="relative" if relative else "absolute",
        control_estimate=c,
        treatment_estimate=t,
        control_units=units[0],
        treatment_units=units[1],
        absolute_effect=absolute[0],
        relative_effect=relative_effect[0] if relative_effect else _NAN,
        standard_error=se,
        ci_lower=lower,
        ci_upper=upper,
        p_value=p_value,
        significant=significant,
        margin=margin,
        margin_relative=margin_relative,
        non_inferior=non_inferior,
        non_inferiority_p_value=ni_p,
        information_fraction=information,
        boundary=boundary,
        state=next_state,
    )


def _intersect(
    lower: float, upper: float, previous: tuple[float, float, str] | None, scale: str
) -> tuple[float, float]:
    """The running intersection of sequential intervals (see ``SequentialState.interval``).

    An empty intersection can happen only with the small probability the design allows (or when
    the effect itself moved): then the current look's interval is kept and the running
    intersection starts again from it."""
    if (
        previous is None
        or previous[2] != scale
        or not (math.isfinite(lower) and math.isfinite(upper))
    ):
        return lower, upper
    lo, hi = max(lower, previous[0]), min(upper, previous[1])
    if lo > hi:
        return lower, upper
    return lo, hi


def _units(stats_: ArmStats) -> int:
    if isinstance(stats_, BinnedScores):
        return stats_.n_units
    if isinstance(stats_, ClusteredHistogram):
        return stats_.units
    return stats_.n
