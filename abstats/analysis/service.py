"""One analysis run: fold new events into the rollups, aggregate per (variant, epoch) in SQL,
decide on the sufficient statistics with :mod:`abstats.stats`, store an immutable snapshot.

Only SQL sums reach Python; no raw event is loaded. The snapshot's ``recommendation`` comes from
the statistics alone; the policy's decision step (``abstats.control``) acts on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from abstats.analysis import aggregate, describe
from abstats.analysis.aggregate import Cell
from abstats.analysis.rollup import (
    RollupPlan,
    RollupResult,
    ensure_cell_epochs,
    lock_analysis,
    roll_up,
)
from abstats.analysis.snapshot import (
    Comparison,
    DriftCheck,
    Gates,
    MetricResult,
    SnapshotResult,
    SrmResult,
    VariantValue,
)
from abstats.db.models import AnalysisSnapshot, DriftState, Experiment, WeightEpoch
from abstats.errors import Conflict, FieldProblem, InvalidInput
from abstats.experiments import repository
from abstats.experiments.specs import Amount, MetricSpec, Policy
from abstats.logging import get_logger
from abstats.stats import (
    ArmStats,
    BinnedScores,
    ClusteredHistogram,
    ComparisonResult,
    EpochCounts,
    InferenceDesign,
    MeanStats,
    ProportionStats,
    RatioStats,
    SequentialState,
    auc_delong,
    clustered_quantile,
    compare,
    compare_stratified,
    holm,
    srm_check_epochs,
)

log = get_logger(__name__)

QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


@dataclass
class AnalysisRun:
    """What :func:`run_analysis` did: the snapshot row and whether this run created it."""

    snapshot: AnalysisSnapshot
    created: bool
    rollup: RollupResult | None = None
    timings: dict[str, float] = field(default_factory=dict)


def parse_experiment_specs(experiment: Experiment) -> tuple[list[MetricSpec], Policy]:
    """The stored metrics and policy, or a clear error naming the bad field."""
    problems: list[FieldProblem] = []
    metrics: list[MetricSpec] = []
    for i, raw in enumerate(experiment.metrics or []):
        try:
            metrics.append(MetricSpec.model_validate(raw))
        except ValidationError as exc:
            problems.append(FieldProblem(f"metrics[{i}]", _first_error(exc)))
    try:
        policy = Policy.model_validate(experiment.policy or {})
    except ValidationError as exc:
        problems.append(FieldProblem("policy", _first_error(exc)))
        policy = Policy()
    if problems:
        raise InvalidInput(
            f"Experiment {experiment.key!r} cannot be analysed: "
            + "; ".join(f"{p.field}: {p.message}" for p in problems),
            errors=problems,
        )
    return metrics, policy


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg', '')}" if where else str(err.get("msg", ""))


def latest_snapshot(session: Session, experiment_id: int) -> AnalysisSnapshot | None:
    return session.scalars(
        select(AnalysisSnapshot)
        .where(AnalysisSnapshot.experiment_id == experiment_id)
        .order_by(AnalysisSnapshot.cutoff.desc(), AnalysisSnapshot.id.desc())
        .limit(1)
    ).first()


def list_snapshots(session: Session, experiment_id: int, *, limit: int) -> list[AnalysisSnapshot]:
    return list(
        session.scalars(
            select(AnalysisSnapshot)
            .where(AnalysisSnapshot.experiment_id == experiment_id)
            .order_by(AnalysisSnapshot.cutoff.desc(), AnalysisSnapshot.id.desc())
            .limit(limit)
        )
    )


def run_analysis(
    session: Session,
    experiment_key: str,
    *,
    wait_seconds: float = 5.0,
    now: datetime | None = None,
) -> AnalysisRun:
    """Analyse ``experiment_key`` now. Runs in the caller's transaction (the caller commits).

    Idempotent: when no event arrived since the latest snapshot, that snapshot is returned
    (``created=False``); two runs racing for the same cut-off store one snapshot."""
    import time

    clock = time.perf_counter
    timings: dict[str, float] = {}
    experiment = repository.get_experiment(session, experiment_key)
    if experiment.status == "draft":
        raise Conflict(
            f"Experiment {experiment_key!r} is a draft: start it before analysing it "
            f"(POST /v1/experiments/{experiment_key}/start)."
        )
    metrics, policy = parse_experiment_specs(experiment)
    lock_analysis(session, experiment.id)
    started = clock()
    rollup = roll_up(
        session, experiment.id, RollupPlan.from_metrics(metrics), wait_seconds=wait_seconds
    )
    timings["rollup"] = clock() - started
    previous = latest_snapshot(session, experiment.id)
    ids = rollup.current.as_dict()
    if previous is not None and _same_data(previous.watermark, ids):
        return AnalysisRun(previous, False, rollup, timings)
    if rollup.current.prediction_id == 0 and rollup.current.exposure_id == 0:
        cutoff = now or datetime.now(UTC)
    else:
        cutoff = rollup.current.max_event_ts or now or datetime.now(UTC)
    if previous is not None and cutoff <= previous.cutoff:
        cutoff = previous.cutoff + timedelta(microseconds=1)  # backfills: keep cut-offs unique
    started = clock()
    result = compute_result(session, experiment, metrics, policy, cutoff=cutoff, previous=previous)
    timings["aggregate_and_test"] = clock() - started
    row = session.execute(
        text(
            """
            INSERT INTO analysis_snapshot
              (experiment_id, cutoff, watermark, weight_epoch, recommendation, result, created_at)
            VALUES (:e, :cutoff, CAST(:watermark AS jsonb), :epoch, :recommendation,
                    CAST(:result AS jsonb), now())
            ON CONFLICT (experiment_id, cutoff) DO NOTHING
            RETURNING id
            """
        ),
        {
            "e": experiment.id,
            "cutoff": cutoff,
            "watermark": _json(ids),
            "epoch": result.weight_epoch,
            "recommendation": result.recommendation,
            "result": result.model_dump_json(),
        },
    ).first()
    created = row is not None
    snapshot = session.scalars(
        select(AnalysisSnapshot)
        .where(AnalysisSnapshot.experiment_id == experiment.id)
        .where(AnalysisSnapshot.cutoff == cutoff)
        .execution_options(populate_existing=True)
    ).one()
    log.info(
        "analysis.snapshot",
        experiment=experiment.key,
        snapshot_id=snapshot.id,
        created=created,
        recommendation=result.recommendation,
        **{k: round(v, 4) for k, v in timings.items()},
    )
    return AnalysisRun(snapshot, created, rollup, timings)


def _json(value: object) -> str:
    import orjson

    return orjson.dumps(value).decode()


def _same_data(stored: dict[str, Any], current: dict[str, object]) -> bool:
    keys = ("exposure_id", "prediction_id", "outcome_id")
    return all(stored.get(k) == current.get(k) for k in keys)


# --- statistics on the aggregates ------------------------------------------------------------


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


def compute_result(
    session: Session,
    experiment: Experiment,
    metrics: Sequence[MetricSpec],
    policy: Policy,
    *,
    cutoff: datetime,
    previous: AnalysisSnapshot | None,
) -> SnapshotResult:
    history = repository.weight_history(session, experiment.id)
    if not history:
        raise Conflict(f"Experiment {experiment.key!r} has no weight epoch; start it first.")
    starts = tuple(epoch.started_at for epoch in history)
    # a weight change committed after the fold read the epochs: stratify by the history used here
    ensure_cell_epochs(session, experiment.id, RollupPlan.from_metrics(list(metrics)), starts)
    key_of = {v.id: v.key for v in experiment.variants}
    control = experiment.control_variant
    treatments = [v.key for v in experiment.variants if v.key != control]
    epochs = [epoch.epoch for epoch in history]
    prev_state: dict[str, Any] = (
        dict(previous.result.get("sequential_state", {})) if previous else {}
    )
    prev_comparisons: dict[str, Any] = dict(prev_state.get("comparisons", {}))

    units = aggregate.unit_cells(session, experiment.id)
    per_variant_units = {v.key: 0 for v in experiment.variants}
    by_epoch: dict[str, dict[str, int]] = {str(e): {} for e in epochs}
    mixed = 0
    for (vid, epoch), cell in units.items():
        variant = key_of.get(vid)
        if variant is None:
            continue
        per_variant_units[variant] += cell.units
        by_epoch.setdefault(str(epoch), {})[variant] = cell.units
        mixed += cell.mixed
    first_seen = aggregate.first_unit_seen(session, experiment.id) if units else None
    total_units = sum(per_variant_units.values())

    srm = _srm(history, by_epoch, prev_state.get("srm_p_value"))
    design = design_from_policy(policy)

    metric_results: list[MetricResult] = []
    new_comparisons: dict[str, object] = {}
    primary_events: dict[str, int] = {v.key: 0 for v in experiment.variants}
    primary_seen = False
    for metric in metrics:
        arms, events = _metric_arms(session, experiment, metric, units, key_of)
        if metric.role == "primary" and not primary_seen:
            primary_seen = True
            primary_events = {v: events.get(v, 0) for v in primary_events}
        values = {
            v.key: _variant_value(metric, arms.get(v.key, {}), per_variant_units[v.key], events)
            for v in experiment.variants
        }
        comparisons: list[Comparison] = []
        for treatment in treatments:
            state_key = f"{metric.key}/{treatment}"
            outcome = _compare(
                metric,
                arms.get(control, {}),
                arms.get(treatment, {}),
                design,
                SequentialState.from_dict(prev_comparisons.get(state_key)),
            )
            comparison = _to_comparison(metric, treatment, outcome)
            new_comparisons[state_key] = outcome.state.to_dict()
            if metric.role == "guardrail" and metric.margin_amount is not None:
                # one-sided non-inferiority at alpha, in the metric's good direction
                ni_key = f"{state_key}/non_inferiority"
                ni = _compare(
                    metric,
                    arms.get(control, {}),
                    arms.get(treatment, {}),
                    design,
                    SequentialState.from_dict(prev_comparisons.get(ni_key)),
                    non_inferiority=True,
                )
                comparison.non_inferior = (
                    ni.non_inferior if ni.status == "ok" or (ni.non_inferior is not None) else None
                )
                new_comparisons[ni_key] = ni.state.to_dict()
            comparisons.append(comparison)
        metric_results.append(
            MetricResult(
                metric=metric.key,
                kind=metric.kind,
                role=metric.role,
                direction=metric.effective_direction,
                variants=values,
                comparisons=comparisons,
            )
        )
    _holm_primaries(metric_results, policy.alpha)

    runtime = (cutoff - first_seen).total_seconds() if first_seen else 0.0
    gates = Gates(
        min_units_met=all(n >= policy.min_units_per_variant for n in per_variant_units.values()),
        min_events_met=all(n >= policy.min_events_per_variant for n in primary_events.values()),
        min_runtime_met=runtime >= policy.min_runtime_seconds,
        units_per_variant=per_variant_units,
        primary_events_per_variant=primary_events,
        runtime_seconds=max(runtime, 0.0),
    )
    drift = latest_drift(session, experiment.id)
    current = history[-1]
    recommendation, reason = recommend(metric_results, srm, gates, drift, policy)
    return SnapshotResult(
        experiment=experiment.key,
        cutoff=cutoff,
        weight_epoch=current.epoch,
        weights={k: float(v) for k, v in current.weights.items()},
        inference=policy.inference,
        alpha=policy.alpha,
        units=per_variant_units,
        exposures_by_epoch=by_epoch,
        mixed_exposure_units=mixed,
        mixed_exposure_share=mixed / total_units if total_units else 0.0,
        last_event_at=cutoff,
        runtime_seconds=max(runtime, 0.0),
        gates=gates,
        metrics=metric_results,
        srm=srm,
        drift=drift,
        recommendation=recommendation,
        reason=reason,
        sequential_state={
            "comparisons": new_comparisons,
            "srm_p_value": srm.p_value if srm is not None else prev_state.get("srm_p_value"),
        },
    )


def _srm(
    history: Sequence[WeightEpoch], by_epoch: dict[str, dict[str, int]], previous_p: Any
) -> SrmResult | None:
    epochs = [
        EpochCounts(
            counts={v: int(by_epoch.get(str(e.epoch), {}).get(v, 0)) for v in e.weights},
            weights={k: float(w) for k, w in e.weights.items()},
        )
        for e in history
    ]
    if sum(sum(e.counts.values()) for e in epochs) == 0:
        return None
    result = srm_check_epochs(
        epochs, previous_p_value=float(previous_p) if isinstance(previous_p, int | float) else None
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


Arms = dict[str, dict[int, ArmStats]]  # variant -> epoch -> stats


def _metric_arms(
    session: Session,
    experiment: Experiment,
    metric: MetricSpec,
    units: dict[Cell, aggregate.UnitCell],
    key_of: dict[int, str],
) -> tuple[Arms, dict[str, int]]:
    """Sufficient statistics per variant and epoch, and the metric's events per variant."""
    arms: Arms = {}
    events: dict[str, int] = {}

    def put(cell: Cell, stats: ArmStats, n_events: int) -> None:
        variant = key_of.get(cell[0])
        if variant is None:
            return
        arms.setdefault(variant, {})[cell[1]] = stats
        events[variant] = events.get(variant, 0) + n_events

    e = experiment.id
    if metric.kind in ("proportion", "mean"):
        assert metric.outcome is not None
        cap = None
        if metric.kind == "mean" and metric.winsorize is not None:
            cap = aggregate.winsorize_cap(session, e, metric.outcome, metric.winsorize)
        for cell, oc in aggregate.outcome_cells(session, e, metric.outcome, cap=cap).items():
            if metric.kind == "proportion":
                put(cell, oc.proportion, oc.proportion.successes)
            else:
                put(cell, oc.mean, oc.units_with_outcome)
    elif metric.kind == "ratio":
        assert metric.numerator is not None and metric.denominator is not None
        cap = None
        if metric.winsorize is not None:
            cap = aggregate.winsorize_cap(session, e, metric.numerator, metric.winsorize)
        for cell, (ratio, with_denominator) in aggregate.ratio_cells(
            session, e, metric.numerator, metric.denominator, cap=cap
        ).items():
            put(cell, ratio, with_denominator)
    elif metric.kind == "classification":
        assert metric.label is not None and metric.measure is not None
        if metric.measure == "auc":
            for vid, scores in aggregate.auc_by_variant(session, e, metric.label).items():
                put((vid, 0), scores, sum(scores.positives) + sum(scores.negatives))
        else:
            cells = aggregate.classification_cells(
                session, e, metric.label, float(metric.threshold)
            )
            for cell, (confusion, log_loss) in cells.items():
                if metric.measure == "log_loss":
                    put(cell, log_loss, int(log_loss.denominator_sum))
                else:
                    put(cell, confusion.ratio_stats(metric.measure), int(sum(confusion.sums)))
    elif metric.kind == "latency":
        if metric.statistic == "mean":
            for cell, uc in units.items():
                put(cell, uc.latency, int(uc.latency.denominator_sum))
        else:
            for cell, hist in aggregate.latency_histograms(session, e).items():
                put(cell, hist, hist.requests)
    elif metric.kind == "error_rate":
        for cell, uc in units.items():
            put(cell, uc.errors, uc.requests)
    return arms, events


def _pooled(stats: dict[int, ArmStats]) -> ArmStats | None:
    total: Any = None
    for value in stats.values():
        total = value if total is None else total + value
    return total  # type: ignore[no-any-return]


def _variant_value(
    metric: MetricSpec, stats: dict[int, ArmStats], units: int, events: dict[str, int]
) -> VariantValue:
    pooled = _pooled(stats)
    value: float | None = None
    n_events = 0
    if isinstance(pooled, ProportionStats):
        value, n_events = pooled.proportion, pooled.successes
    elif isinstance(pooled, MeanStats):
        value = pooled.mean
    elif isinstance(pooled, RatioStats):
        value = pooled.ratio
        n_events = int(pooled.denominator_sum)
    elif isinstance(pooled, BinnedScores):
        value = auc_delong(pooled).auc
        n_events = sum(pooled.positives) + sum(pooled.negatives)
    elif isinstance(pooled, ClusteredHistogram):
        q = QUANTILES.get(metric.statistic or "", 0.5)
        value = clustered_quantile(pooled, q).estimate
        n_events = pooled.requests
    if isinstance(pooled, MeanStats):
        n_events = pooled.n
    return VariantValue(units=units, events=n_events, value=_finite(value))


def _margin(metric: MetricSpec) -> tuple[float | None, bool]:
    amount: Amount | None = metric.margin_amount
    if amount is None:
        return None, True
    return amount.value, amount.relative


def _compare(
    metric: MetricSpec,
    control: dict[int, ArmStats],
    treatment: dict[int, ArmStats],
    design: InferenceDesign,
    previous: SequentialState,
    *,
    non_inferiority: bool = False,
) -> ComparisonResult:
    """Two-sided test of "no effect", or (``non_inferiority``) the one-sided test that the
    treatment is not worse than the control by the metric's margin."""
    margin, margin_relative = _margin(metric)
    if margin is not None and not margin_relative:
        # on the absolute scale the margin is the effect that matters: tune the mixture to it
        design = replace(design, mde_absolute=abs(margin))
    quantile = QUANTILES.get(metric.statistic or "") if metric.kind == "latency" else None
    alternative = "two-sided"
    if non_inferiority:
        alternative = "less" if metric.effective_direction == "decrease" else "greater"
    kwargs: dict[str, Any] = {
        "design": design,
        "alternative": alternative,
        "relative": margin_relative,  # a metric with an absolute margin is read on that scale
        "margin": margin if non_inferiority else None,
        "margin_relative": margin_relative,
        "previous": previous,
        "quantile": quantile,
    }
    shared = sorted(
        e for e in set(control) & set(treatment) if _n(control[e]) > 0 and _n(treatment[e]) > 0
    )
    if len(shared) > 1:
        return compare_stratified([(control[e], treatment[e]) for e in shared], **kwargs)
    c = _pooled(control)
    t = _pooled(treatment)
    if c is None or t is None:
        empty = _empty_like(c if c is not None else t)
        c = c if c is not None else empty
        t = t if t is not None else empty
    return compare(c, t, **kwargs)


def _n(stats: ArmStats) -> int:
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


def _to_comparison(metric: MetricSpec, variant: str, r: ComparisonResult) -> Comparison:
    direction = metric.effective_direction
    status = r.status
    ok = status == "ok"
    effect = r.relative_effect if r.effect_scale == "relative" else r.absolute_effect
    better = worse = None
    if direction is not None and ok and math.isfinite(effect):
        good = effect > 0 if direction == "increase" else effect < 0
        better = bool(r.significant and good)
        worse = bool(r.significant and not good and effect != 0)
    return Comparison(
        variant=variant,
        status=status,
        message=r.message,
        absolute_effect=_finite(r.absolute_effect),
        relative_effect=_finite(r.relative_effect),
        ci_lower=_finite(r.ci_lower),
        ci_upper=_finite(r.ci_upper),
        ci_scale=r.effect_scale,
        p_value=_finite(r.p_value),
        p_value_adjusted=_finite(r.p_value),
        significant=bool(r.significant and ok),
        better=better,
        worse=worse,
        non_inferior=None,
        margin=str(metric.margin_amount) if metric.margin_amount is not None else None,
        inference=r.method,
    )


def _holm_primaries(results: list[MetricResult], alpha: float) -> None:
    """Holm across treatments x primary metrics (family-wise error, DESIGN.md section 2)."""
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
        significant = comparison.significant and p <= alpha
        if not significant:
            comparison.significant = False
            if comparison.better is not None:
                comparison.better = False
                comparison.worse = False


def latest_drift(session: Session, experiment_id: int) -> list[DriftCheck]:
    rows = session.scalars(
        select(DriftState)
        .where(DriftState.experiment_id == experiment_id)
        .order_by(DriftState.variant, DriftState.target)
    )
    checks = []
    for row in rows:
        if row.last_result:
            checks.append(DriftCheck.model_validate(row.last_result))
    return checks


def _beyond_margin(c: Comparison, direction: str | None) -> bool:
    """A guardrail breach: the whole interval lies beyond the margin on the bad side (without a
    margin, any significant harm)."""
    if c.margin is None:
        return True
    amount = Amount.parse(c.margin)
    if (c.ci_scale == "relative") != amount.relative:
        return bool(c.worse)  # scales differ: fall back to significance
    if direction == "decrease":
        return c.ci_lower is not None and c.ci_lower > amount.value
    return c.ci_upper is not None and c.ci_upper < -amount.value


def recommend(
    metrics: Sequence[MetricResult],
    srm: SrmResult | None,
    gates: Gates,
    drift: Sequence[DriftCheck],
    policy: Policy,
) -> tuple[str, str]:
    """What the statistics alone suggest, and why."""
    if srm is not None and srm.flagged:
        return "invalid: SRM", (
            f"sample ratio mismatch: observed {describe.counts(srm.observed)} vs expected "
            f"{describe.counts(srm.expected)} (p={describe.p_value(srm.p_value)})"
        )
    if not gates.all_met:
        missing = []
        if not gates.min_units_met:
            missing.append(f"units per variant {describe.counts(gates.units_per_variant)}")
        if not gates.min_events_met:
            missing.append(
                f"primary events per variant {describe.counts(gates.primary_events_per_variant)}"
            )
        if not gates.min_runtime_met:
            missing.append(f"runtime {gates.runtime_seconds:.0f}s")
        return "keep running", "minimum sample gates not met: " + "; ".join(missing)
    for m in metrics:
        if m.role == "guardrail":
            for c in m.comparisons:
                if c.worse and _beyond_margin(c, m.direction):
                    return "rollback", (
                        f"guardrail {m.metric} is worse in {c.variant} by more than its margin"
                        f" {c.margin}: {describe.effect(c)}"
                    )
    for m in metrics:
        if m.role == "primary":
            for c in m.comparisons:
                if c.worse:
                    return "rollback", (
                        f"primary metric {m.metric} is worse in {c.variant}: {describe.effect(c)}"
                    )
    primaries = [m for m in metrics if m.role == "primary"]
    guardrails = [m for m in metrics if m.role == "guardrail"]
    if primaries:
        winners = []
        for c in primaries[0].comparisons:
            if c.better and all(
                g.variant != c.variant or g.non_inferior is not False
                for gm in guardrails
                for g in gm.comparisons
            ):
                winners.append(c)
        if winners:
            best = max(winners, key=lambda c: c.relative_effect or c.absolute_effect or 0.0)
            return f"promote {best.variant}", (
                f"{primaries[0].metric} is better in {best.variant}: {describe.effect(best)}, "
                f"p={describe.p_value(best.p_value_adjusted)}"
            )
        statuses = {c.status for m in primaries for c in m.comparisons}
        if policy.inference == "fixed" and statuses == {"ok"}:
            return (
                "hold: inconclusive at max sample",
                "the planned sample gave no significant result",
            )
        if (
            policy.max_units_per_variant is not None
            and min(gates.units_per_variant.values(), default=0) >= policy.max_units_per_variant
        ):
            return "hold: inconclusive at max sample", "max_units_per_variant reached"
    if any(d.flagged for d in drift):
        return "keep running", "no conclusive result; drift flagged (see drift checks)"
    return "keep running", "no conclusive result yet"
