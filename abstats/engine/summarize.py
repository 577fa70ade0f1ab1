"""Sufficient statistics -> a snapshot. Pure: the analysis service aggregates in SQL and hands
the sums here; nothing in this module touches a database.

For every metric and variant the snapshot carries the pooled estimate with its standard error and
interval (:func:`abstats.stats.estimate`); for every treatment the comparison with the control,
estimated within weight epochs and combined (:func:`abstats.stats.compare_stratified`), with the
sequential state carried to the next look; Holm across treatments x primary metrics; the SRM check
against the weight history; the policy's minimum-sample gates. The recommendation is the rule
table's own verdict (:func:`abstats.engine.rules.recommend`), so a recommendation and a decision
cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from abstats.engine.plan import planned_units
from abstats.engine.rules import ExperimentState, recommend, rollback_tests
from abstats.engine.segments import breakdown
from abstats.engine.snapshot import (
    Adjustment,
    Comparison,
    DriftCheck,
    Gates,
    MetricResult,
    PlanProgress,
    SnapshotResult,
    SrmResult,
    VariantValue,
)
from abstats.engine.specs import ExperimentSpec, MetricSpec, Policy
from abstats.stats import (
    ArmStats,
    BinnedScores,
    ClusteredHistogram,
    ComparisonResult,
    CovariateStats,
    CupedAdjustment,
    EpochCounts,
    InferenceDesign,
    MeanStats,
    ProportionStats,
    RatioStats,
    SequentialState,
    Weighting,
    compare,
    compare_stratified,
    cuped,
    estimate,
    holm,
    srm_check_epochs,
)

QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}

Arms = dict[str, dict[int, ArmStats]]  # variant -> weight epoch -> sufficient statistics

# How weight epochs are combined (abstats.stats.compare_stratified): CMH weights waste no power
# on a ramp's lopsided early epochs, and weight both arms alike so a drifting baseline cancels.
EPOCH_WEIGHTING: Weighting = "cmh"


@dataclass(frozen=True)
class EpochWeights:
    """One weight epoch: its number, when it started and the weights it served."""

    epoch: int
    started_at: datetime
    weights: Mapping[str, float]


@dataclass(frozen=True)
class MetricData:
    """One metric's sufficient statistics per variant and epoch, and its events per variant."""

    arms: Arms
    events: Mapping[str, int]
    # attribution windows: units left out because their window has not closed, per variant
    pending: Mapping[str, int] = field(default_factory=dict)
    # covariate adjustment: per variant and epoch, the outcome with its pre-exposure covariate
    covariates: Mapping[str, Mapping[int, CovariateStats]] = field(default_factory=dict)
    # segment_by: segment -> variant -> epoch -> statistics
    segments: Mapping[str, Arms] = field(default_factory=dict)


@dataclass(frozen=True)
class Aggregates:
    """Everything SQL aggregated for one look at an experiment."""

    cutoff: datetime
    epochs: Sequence[EpochWeights]  # oldest first; the last is the current one
    units: Mapping[str, int]  # variant -> units (first exposure in the variant)
    units_by_epoch: Mapping[str, Mapping[str, int]]  # epoch -> variant -> units first exposed
    mixed_units: int
    first_seen: datetime | None
    metrics: Mapping[str, MetricData]  # metric key -> data
    drift: Sequence[DriftCheck] = ()
    previous_state: Mapping[str, Any] = field(default_factory=dict)
    # epoch -> variant -> units first exposed while the router switched over (from the epoch's
    # start until the router confirmed its weights, plus a settle window): they may have been
    # served the previous weights, so the SRM check leaves them out
    settling: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


def design_from_policy(policy: Policy) -> InferenceDesign:
    mde = policy.mde_amount
    mde_relative = mde.value if mde.relative else None
    if mde_relative is None and policy.max_units_per_variant is None:
        mde_relative = 0.02  # an absolute MDE cannot tune a relative mixture; use the default
    return InferenceDesign(
        method=policy.inference,
        alpha=policy.alpha,
        mde_relative=mde_relative,
        max_units_per_variant=policy.max_units_per_variant,
        min_units_per_variant=2,
    )


def summarize(spec: ExperimentSpec, data: Aggregates, state: ExperimentState) -> SnapshotResult:
    """The snapshot of one look: values, comparisons, SRM, gates and the rule table's verdict.

    ``state`` is the experiment as it stands (status, weights, epoch, history): the
    recommendation is what the policy would decide on this snapshot in that state."""
    policy = spec.policy
    design = design_from_policy(policy)
    family = rollback_tests(
        guardrails=sum(m.role == "guardrail" for m in spec.metrics),
        primaries=len(spec.primaries),
        treatments=len(spec.treatments),
        on_primary_worse=policy.rollback.on_primary_worse,
    )
    previous: Mapping[str, Any] = data.previous_state
    prev_comparisons: Mapping[str, Any] = dict(previous.get("comparisons", {}))
    new_comparisons: dict[str, object] = {}
    results: list[MetricResult] = []
    frozen: Mapping[str, Any] = dict(previous.get("fixed_final", {}))
    at_horizon = policy.max_units_per_variant is not None and all(
        data.units.get(v, 0) >= policy.max_units_per_variant for v in spec.variants
    )
    for metric in spec.metrics:
        metric_data = data.metrics.get(metric.key, MetricData({}, {}))
        if policy.inference == "fixed" and metric.role != "guardrail" and metric.key in frozen:
            # a fixed design tests once, at the first look that reaches the planned sample; its
            # result is final (re-testing later looks would inflate the error rate)
            comparisons = [Comparison.model_validate(c) for c in frozen[metric.key]]
        else:
            comparisons = []
            for treatment in spec.treatments:
                comparison, states = _comparison(
                    metric,
                    treatment,
                    metric_data.arms.get(spec.control, {}),
                    metric_data.arms.get(treatment, {}),
                    design,
                    prev_comparisons,
                    rollback_family=family,
                    covariates=(
                        metric_data.covariates.get(spec.control, {}),
                        metric_data.covariates.get(treatment, {}),
                    ),
                )
                new_comparisons.update(states)
                comparisons.append(comparison)
        results.append(
            MetricResult(
                metric=metric.key,
                kind=metric.kind,
                role=metric.role,
                direction=metric.effective_direction,
                variants={
                    v: variant_value(
                        metric,
                        metric_data.arms.get(v, {}),
                        data.units.get(v, 0) - metric_data.pending.get(v, 0),
                    )
                    for v in spec.variants
                },
                comparisons=comparisons,
                window=None if metric.window is None else str(metric.window),
                pending_units={v: n for v, n in metric_data.pending.items() if n},
                segments=[
                    breakdown(
                        metric.segment_by, metric_data.segments, spec.control, t, policy.alpha
                    )
                    for t in spec.treatments
                ]
                if metric.segment_by is not None
                else [],
            )
        )
    holm_primaries(results, policy.alpha)
    if policy.inference == "fixed" and at_horizon:
        frozen = frozen or {
            m.metric: [c.model_dump(mode="json") for c in m.comparisons]
            for m in results
            if m.role != "guardrail"
        }
    served = {
        epoch: {v: n - int(data.settling.get(epoch, {}).get(v, 0)) for v, n in by_variant.items()}
        for epoch, by_variant in data.units_by_epoch.items()
    }
    srm = srm_result(data.epochs, served, previous.get("srm_p_value"))
    gates = _gates(spec, data)
    total_units = sum(data.units.values())
    current = data.epochs[-1]
    snapshot = SnapshotResult(
        experiment=spec.key,
        cutoff=data.cutoff,
        weight_epoch=current.epoch,
        weights={k: float(v) for k, v in current.weights.items()},
        inference=policy.inference,
        alpha=policy.alpha,
        units=dict(data.units),
        exposures_by_epoch={e: dict(v) for e, v in data.units_by_epoch.items()},
        srm_excluded_units=sum(sum(v.values()) for v in data.settling.values()),
        mixed_exposure_units=data.mixed_units,
        mixed_exposure_share=data.mixed_units / total_units if total_units else 0.0,
        last_event_at=data.cutoff,
        runtime_seconds=gates.runtime_seconds,
        gates=gates,
        rollback_tests=family,
        metrics=results,
        progress=[_progress(spec, m) for m in results if m.role == "primary"],
        srm=srm,
        drift=list(data.drift),
        sequential_state={
            "comparisons": new_comparisons,
            "srm_p_value": srm.p_value if srm is not None else previous.get("srm_p_value"),
            **({"fixed_final": dict(frozen)} if frozen else {}),
        },
    )
    action = recommend(snapshot, policy, state)
    return snapshot.model_copy(update={"recommendation": action.label, "reason": action.reason})


def _gates(spec: ExperimentSpec, data: Aggregates) -> Gates:
    policy = spec.policy
    primary = data.metrics.get(spec.primaries[0].key) if spec.primaries else None
    events = primary.events if primary is not None else {}
    primary_events = {v: int(events.get(v, 0)) for v in spec.variants}
    units = {v: int(data.units.get(v, 0)) for v in spec.variants}
    runtime = (data.cutoff - data.first_seen).total_seconds() if data.first_seen else 0.0
    return Gates(
        min_units_met=all(n >= policy.min_units_per_variant for n in units.values()),
        min_events_met=all(n >= policy.min_events_per_variant for n in primary_events.values()),
        min_runtime_met=runtime >= policy.min_runtime_seconds,
        units_per_variant=units,
        primary_events_per_variant=primary_events,
        runtime_seconds=max(runtime, 0.0),
    )


def _progress(spec: ExperimentSpec, metric: MetricResult) -> PlanProgress:
    """How far a primary metric is from its planned sample: the policy's horizon when it has
    one, else the plan for the policy's mde from the control's observed value and per-unit sd
    (``sd = std_error * sqrt(units)``, which holds for every kind's estimator)."""
    policy = spec.policy
    active = [v for v in spec.variants if v not in spec.retired]
    have = min((metric.variants[v].units for v in active if v in metric.variants), default=0)
    if policy.max_units_per_variant is not None:
        return PlanProgress(
            metric=metric.metric,
            units_per_variant=have,
            planned_units_per_variant=policy.max_units_per_variant,
            source="policy",
        )
    control = metric.variants.get(spec.control)
    sd = None
    if control is not None and control.std_error is not None and control.units > 1:
        sd = control.std_error * math.sqrt(control.units)
    planned = planned_units(
        kind=metric.kind,
        control_value=control.value if control is not None and control.units > 1 else None,
        control_sd=sd,
        mde=policy.mde_amount,
        alpha=policy.alpha,
        inference=policy.inference,
        candidates=max(len(active) - 1, 1),
    )
    return PlanProgress(
        metric=metric.metric,
        units_per_variant=have,
        planned_units_per_variant=planned,
        source="observed_control",
    )


def srm_result(
    epochs: Sequence[EpochWeights],
    units_by_epoch: Mapping[str, Mapping[str, int]],
    previous_p: Any,
) -> SrmResult | None:
    """The sequential SRM check of each epoch's first exposures against that epoch's weights."""
    counts = [
        EpochCounts(
            counts={v: int(units_by_epoch.get(str(e.epoch), {}).get(v, 0)) for v in e.weights},
            weights={k: float(w) for k, w in e.weights.items()},
        )
        for e in epochs
    ]
    if sum(sum(e.counts.values()) for e in counts) == 0:
        return None
    result = srm_check_epochs(
        counts, previous_p_value=float(previous_p) if isinstance(previous_p, int | float) else None
    )
    return SrmResult(
        observed=dict(result.observed),
        expected=dict(result.expected),
        p_value=_finite(result.p_value),
        threshold=result.threshold,
        flagged=bool(result.mismatch),
        method=result.method,
    )


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def pooled(stats: Mapping[int, ArmStats]) -> ArmStats | None:
    """The sum of an arm's statistics over its epochs."""
    total: Any = None
    for value in stats.values():
        total = value if total is None else total + value
    return total  # type: ignore[no-any-return]


def variant_value(metric: MetricSpec, stats: Mapping[int, ArmStats], units: int) -> VariantValue:
    """One variant's pooled value with its standard error and interval."""
    total = pooled(stats)
    if total is None:
        return VariantValue(units=units, events=0, value=None)
    quantile = QUANTILES.get(metric.statistic or "", 0.5)
    est = estimate(total, quantile=quantile)
    return VariantValue(
        units=units,
        events=est.events,
        value=_finite(est.value),
        std_error=_finite(est.std_error),
        ci_lower=_finite(est.ci_lower),
        ci_upper=_finite(est.ci_upper),
    )


def _comparison(
    metric: MetricSpec,
    treatment: str,
    control_arms: Mapping[int, ArmStats],
    treatment_arms: Mapping[int, ArmStats],
    design: InferenceDesign,
    previous: Mapping[str, Any],
    *,
    rollback_family: int,
    covariates: tuple[Mapping[int, CovariateStats], Mapping[int, CovariateStats]] = ({}, {}),
) -> tuple[Comparison, dict[str, object]]:
    """The two-sided comparison and, for a guardrail with a margin, the non-inferiority test;
    with the sequential states to carry. A guardrail's two-sided test is one of the tests that
    can roll back: it runs at alpha / rollback_family (its non-inferiority test, which only gates
    promotion and ramp steps, at alpha)."""
    state_key = f"{metric.key}/{treatment}"
    two_sided = design
    if metric.role == "guardrail":
        two_sided = replace(design, alpha=design.alpha / rollback_family)
    raw: ComparisonResult | None = None
    adjustment = None
    if metric.covariate is not None:
        adjusted = _cuped_arms(*covariates)
        if adjusted is not None:
            raw_key = f"{state_key}/raw"
            raw = compare_arms(
                metric,
                control_arms,
                treatment_arms,
                two_sided,
                SequentialState.from_dict(previous.get(raw_key)),
            )
            raw_state = {raw_key: raw.state.to_dict()}
            adjustment, control_arms, treatment_arms = adjusted
    outcome = compare_arms(
        metric,
        control_arms,
        treatment_arms,
        two_sided,
        SequentialState.from_dict(previous.get(state_key)),
    )
    comparison = to_comparison(metric, treatment, outcome)
    states: dict[str, object] = {state_key: outcome.state.to_dict()}
    if raw is not None and adjustment is not None:
        states.update(raw_state)
        comparison.adjustment = Adjustment(
            covariate=metric.covariate or "",
            theta=adjustment.theta,
            variance_reduction=adjustment.variance_reduction,
            raw_absolute_effect=_finite(raw.absolute_effect),
            raw_relative_effect=_finite(raw.relative_effect),
            raw_ci_lower=_finite(raw.ci_lower),
            raw_ci_upper=_finite(raw.ci_upper),
            raw_p_value=_finite(raw.p_value),
        )
    if metric.role == "guardrail" and metric.margin_amount is not None:
        # one-sided non-inferiority at alpha, in the metric's good direction
        ni_key = f"{state_key}/non_inferiority"
        ni = compare_arms(
            metric,
            control_arms,
            treatment_arms,
            design,
            SequentialState.from_dict(previous.get(ni_key)),
            non_inferiority=True,
        )
        comparison.non_inferior = ni.non_inferior
        comparison.p_value_non_inferiority = _finite(ni.non_inferiority_p_value)
        states[ni_key] = ni.state.to_dict()
    return comparison, states


def _cuped_arms(
    control: Mapping[int, CovariateStats], treatment: Mapping[int, CovariateStats]
) -> tuple[CupedAdjustment, dict[int, ArmStats], dict[int, ArmStats]] | None:
    """The adjusted outcomes per epoch (:func:`abstats.stats.cuped`, one theta over the epochs
    where both arms have units); None when there is nothing to adjust."""
    shared = sorted(e for e in set(control) & set(treatment) if control[e].n and treatment[e].n)
    if not shared:
        return None
    adjustment = cuped([(control[e], treatment[e]) for e in shared])
    return (
        adjustment,
        {e: c for e, (c, _) in zip(shared, adjustment.strata, strict=True)},
        {e: t for e, (_, t) in zip(shared, adjustment.strata, strict=True)},
    )


def compare_arms(
    metric: MetricSpec,
    control: Mapping[int, ArmStats],
    treatment: Mapping[int, ArmStats],
    design: InferenceDesign,
    previous: SequentialState,
    *,
    non_inferiority: bool = False,
) -> ComparisonResult:
    """Two-sided test of "no effect", or (``non_inferiority``) the one-sided test that the
    treatment is not worse than the control by the metric's margin; stratified by weight epoch
    when both arms have units in more than one."""
    margin = metric.margin_amount
    margin_relative = margin.relative if margin is not None else True
    if design.method == "fixed" and metric.role == "guardrail":
        # guardrails protect production from the first look: a valid sequential test even when
        # the primary metric is read once at a fixed horizon
        design = replace(design, method="always_valid")
    if margin is not None and not margin.relative:
        # on the absolute scale the margin is the effect that matters: tune the mixture to it
        design = replace(design, mde_absolute=abs(margin.value))
    quantile = QUANTILES.get(metric.statistic or "") if metric.kind == "latency" else None
    alternative = "two-sided"
    if non_inferiority:
        alternative = "less" if metric.effective_direction == "decrease" else "greater"
    kwargs: dict[str, Any] = {
        "design": design,
        "alternative": alternative,
        "relative": margin_relative,  # a metric with an absolute margin is read on that scale
        "margin": margin.value if non_inferiority and margin is not None else None,
        "margin_relative": margin_relative,
        "previous": previous,
        "quantile": quantile,
    }
    shared = sorted(
        e
        for e in set(control) & set(treatment)
        if _units(control[e]) > 0 and _units(treatment[e]) > 0
    )
    if len(shared) > 1:
        return compare_stratified(
            [(control[e], treatment[e]) for e in shared], weighting=EPOCH_WEIGHTING, **kwargs
        )
    c = pooled(control)
    t = pooled(treatment)
    if c is None or t is None:
        empty = _empty_like(c if c is not None else t)
        c = c if c is not None else empty
        t = t if t is not None else empty
    return compare(c, t, **kwargs)


def _units(stats: ArmStats) -> int:
    if isinstance(stats, BinnedScores):
        return stats.n_units
    if isinstance(stats, ClusteredHistogram):
        return stats.units
    return stats.n


def _empty_like(stats: ArmStats | None) -> ArmStats:
    if isinstance(stats, ProportionStats) or stats is None:
        return ProportionStats.empty()
    if isinstance(stats, MeanStats):
        return MeanStats.empty()
    if isinstance(stats, RatioStats):
        return RatioStats.empty(is_proportion=stats.is_proportion)
    if isinstance(stats, BinnedScores):
        return BinnedScores.empty(len(stats.positives))
    return ClusteredHistogram.empty(stats.bin_edges)


def to_comparison(metric: MetricSpec, variant: str, r: ComparisonResult) -> Comparison:
    """``better``/``worse`` are read off the interval: significant, and the interval excludes zero
    on that side (for sequential designs the interval is the running intersection, so it agrees
    with the running-minimum p-value and never points the other way)."""
    direction = metric.effective_direction
    ok = r.status == "ok"
    lo, hi = r.ci_lower, r.ci_upper
    better = worse = None
    if direction is not None and ok and math.isfinite(lo) and math.isfinite(hi):
        above, below = lo > 0, hi < 0
        better = bool(r.significant and (above if direction == "increase" else below))
        worse = bool(r.significant and (below if direction == "increase" else above))
    return Comparison(
        variant=variant,
        status=r.status,
        message=r.message,
        absolute_effect=_finite(r.absolute_effect),
        relative_effect=_finite(r.relative_effect),
        ci_lower=_finite(r.ci_lower),
        ci_upper=_finite(r.ci_upper),
        ci_scale=r.effect_scale,
        p_value=_finite(r.p_value),
        p_value_adjusted=None,
        significant=bool(r.significant and ok),
        better=better,
        worse=worse,
        non_inferior=None,
        p_value_non_inferiority=None,
        margin=metric.margin_amount,
        inference=r.method,
    )


def holm_primaries(results: Sequence[MetricResult], alpha: float) -> None:
    """Holm across treatments x primary metrics (family-wise error; ``docs/statistics.md``).

    ``p_value_adjusted`` is set only where something was adjusted (a family of two or more), so
    a reason says "after Holm" only when Holm changed something."""
    family = [
        c
        for m in results
        if m.role == "primary"
        for c in m.comparisons
        if c.status == "ok" and c.p_value is not None
    ]
    if len(family) < 2:
        return
    adjusted = holm([c.p_value for c in family if c.p_value is not None])
    for comparison, p in zip(family, adjusted, strict=True):
        comparison.p_value_adjusted = p
        if not (comparison.significant and p <= alpha):
            comparison.significant = False
            if comparison.better is not None:
                comparison.better = False
                comparison.worse = False
