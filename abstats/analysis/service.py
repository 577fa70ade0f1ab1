"""One analysis run: fold new events into the rollups, aggregate per (variant, epoch) in SQL,
and hand the sums to the engine (:func:`abstats.engine.summarize.summarize`), which builds the
snapshot and its recommendation; store the snapshot, immutable.

Only SQL sums reach Python; no raw event is loaded. This module is orchestration and SQL: every
statistical step and every rule lives in :mod:`abstats.engine`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from abstats.analysis import aggregate
from abstats.analysis.aggregate import Cell
from abstats.analysis.rollup import (
    RollupPlan,
    RollupResult,
    ensure_cell_epochs,
    lock_analysis,
    roll_up,
)
from abstats.config import get_settings
from abstats.db.models import AnalysisSnapshot, DriftState, Experiment, WeightEpoch
from abstats.engine.snapshot import DriftCheck, SnapshotResult
from abstats.engine.specs import ExperimentSpec, MetricSpec
from abstats.engine.summarize import Aggregates, Arms, EpochWeights, MetricData, summarize
from abstats.errors import Conflict
from abstats.experiments import repository
from abstats.experiments.state import experiment_spec, experiment_state
from abstats.logging import get_logger
from abstats.stats import ArmStats, CovariateStats

log = get_logger(__name__)


@dataclass
class AnalysisRun:
    """What :func:`run_analysis` did: the snapshot row and whether this run created it."""

    snapshot: AnalysisSnapshot
    created: bool
    rollup: RollupResult | None = None
    timings: dict[str, float] = field(default_factory=dict)


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
    clock = time.perf_counter
    timings: dict[str, float] = {}
    experiment = repository.get_experiment(session, experiment_key)
    if experiment.status == "draft":
        raise Conflict(
            f"Experiment {experiment_key!r} is a draft: start it before analysing it "
            f"(POST /v1/experiments/{experiment_key}/start)."
        )
    spec = experiment_spec(experiment)
    lock_analysis(session, experiment.id)
    started = clock()
    rollup = roll_up(
        session,
        experiment.id,
        RollupPlan.from_metrics(list(spec.metrics)),
        wait_seconds=wait_seconds,
    )
    timings["rollup"] = clock() - started
    previous = latest_snapshot(session, experiment.id)
    ids = rollup.current.as_dict()
    if previous is not None and _same_data(previous.watermark, ids):
        return AnalysisRun(previous, False, rollup, timings)
    # The server's clock bounds the data cut-off: an event stamped in the future (a client's
    # clock; up to 24 h ahead is accepted) is stored and analysed but cannot move the clock that
    # runtime, ramp steps and freshness are measured on.
    server_now = now or datetime.now(UTC)
    if rollup.current.prediction_id == 0 and rollup.current.exposure_id == 0:
        cutoff = server_now
    else:
        cutoff = min(rollup.current.max_event_ts or server_now, server_now)
    if previous is not None and cutoff <= previous.cutoff:
        cutoff = previous.cutoff + timedelta(microseconds=1)  # backfills: keep cut-offs unique
    started = clock()
    result = compute_result(session, experiment, spec, cutoff=cutoff, previous=previous)
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


# --- aggregates for the engine ----------------------------------------------------------------


def compute_result(
    session: Session,
    experiment: Experiment,
    spec: ExperimentSpec,
    *,
    cutoff: datetime,
    previous: AnalysisSnapshot | None,
) -> SnapshotResult:
    """Aggregate everything the engine needs for one look, in SQL, and summarize it."""
    history = repository.weight_history(session, experiment.id)
    if not history:
        raise Conflict(f"Experiment {experiment.key!r} has no weight epoch; start it first.")
    starts = tuple(epoch.started_at for epoch in history)
    # a weight change committed after the fold read the epochs: stratify by the history used here
    ensure_cell_epochs(session, experiment.id, RollupPlan.from_metrics(list(spec.metrics)), starts)
    key_of = {v.id: v.key for v in experiment.variants}
    confirmations = repository.epoch_confirmations(session, experiment.id)  # read once
    units = aggregate.unit_cells(session, experiment.id)
    per_variant = {v: 0 for v in spec.variants}
    by_epoch: dict[str, dict[str, int]] = {str(e.epoch): {} for e in history}
    mixed = 0
    for (vid, epoch), cell in units.items():
        variant = key_of.get(vid)
        if variant is None:
            continue
        per_variant[variant] += cell.units
        by_epoch.setdefault(str(epoch), {})[variant] = cell.units
        mixed += cell.mixed
    data = Aggregates(
        cutoff=cutoff,
        epochs=[EpochWeights(e.epoch, e.started_at, dict(e.weights)) for e in history],
        units=per_variant,
        units_by_epoch=by_epoch,
        mixed_units=mixed,
        first_seen=aggregate.first_unit_seen(session, experiment.id) if units else None,
        metrics={
            m.key: _metric_data(session, experiment.id, m, units, key_of, cutoff)
            for m in spec.metrics
        },
        drift=latest_drift(session, experiment.id),
        previous_state=dict(previous.result.get("sequential_state", {})) if previous else {},
        settling=_settling(session, experiment.id, history, confirmations, key_of, cutoff),
    )
    return summarize(spec, data, experiment_state(session, experiment, confirmations=confirmations))


def _settling(
    session: Session,
    experiment_id: int,
    history: list[WeightEpoch],
    confirmed: dict[int, datetime | None],
    key_of: dict[int, str],
    cutoff: datetime,
) -> dict[str, dict[str, int]]:
    """Units first exposed in each epoch before its router confirmed the weights (plus
    ``ABSTATS_EPOCH_SETTLE_SECONDS``): epoch -> variant -> units."""
    settle = timedelta(seconds=get_settings().epoch_settle_seconds)
    windows = []
    for i, epoch in enumerate(history):
        following = history[i + 1].started_at if i + 1 < len(history) else None
        at = confirmed.get(epoch.epoch, epoch.started_at)
        if epoch.epoch == history[0].epoch and at == epoch.started_at:
            continue  # the first weights are served from the start: nothing to switch over
        end = (at + settle) if at is not None else (following or cutoff + timedelta(seconds=1))
        if following is not None:
            end = min(end, following)
        if end > epoch.started_at:
            windows.append((epoch.epoch, epoch.started_at, end))
    counts = aggregate.units_first_seen_in(session, experiment_id, windows)
    return {
        str(epoch): {key_of[vid]: n for vid, n in by_variant.items() if vid in key_of}
        for epoch, by_variant in counts.items()
    }


def _metric_data(
    session: Session,
    experiment_id: int,
    metric: MetricSpec,
    units: dict[Cell, aggregate.UnitCell],
    key_of: dict[int, str],
    cutoff: datetime,
    *,
    with_covariate: bool = True,
) -> MetricData:
    """Sufficient statistics per variant and epoch, and the metric's events per variant."""
    arms: Arms = {}
    events: dict[str, int] = {}

    def put(cell: Cell, stats: ArmStats, n_events: int) -> None:
        variant = key_of.get(cell[0])
        if variant is None:
            return
        arms.setdefault(variant, {})[cell[1]] = stats
        events[variant] = events.get(variant, 0) + n_events

    e = experiment_id
    if metric.kind in ("proportion", "mean") and metric.window_seconds is not None:
        assert metric.outcome is not None
        windowed, waiting = aggregate.window_cells(
            session, e, metric.outcome, metric.window_seconds, cutoff
        )
        for cell, oc in windowed.items():
            if metric.kind == "proportion":
                put(cell, oc.proportion, oc.proportion.successes)
            else:
                put(cell, oc.mean, oc.units_with_outcome)
        pending = {key_of[vid]: n for vid, n in waiting.items() if vid in key_of}
        return MetricData(arms, events, pending)
    if (
        with_covariate
        and metric.kind in ("proportion", "mean")
        and metric.lookback_seconds is not None
    ):
        assert metric.outcome is not None
        covariates: dict[str, dict[int, CovariateStats]] = {}
        for (vid, epoch), cs in aggregate.cuped_cells(
            session,
            e,
            metric.outcome,
            metric.lookback_seconds,
            proportion=metric.kind == "proportion",
        ).items():
            if vid in key_of:
                covariates.setdefault(key_of[vid], {})[epoch] = cs
        plain = _metric_data(session, e, metric, units, key_of, cutoff, with_covariate=False)
        return MetricData(plain.arms, plain.events, covariates=covariates, segments=plain.segments)
    if metric.kind in ("proportion", "mean") and metric.segment_by is not None:
        assert metric.outcome is not None
        by_segment: dict[str, Arms] = {}
        for segment, segment_cells in aggregate.segment_cells(
            session, e, metric.segment_by, metric.outcome
        ).items():
            for (vid, epoch), oc in segment_cells.items():
                if vid in key_of:
                    stats = oc.proportion if metric.kind == "proportion" else oc.mean
                    by_segment.setdefault(segment, {}).setdefault(key_of[vid], {})[epoch] = stats
        segments_data = by_segment
    else:
        segments_data = {}
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
            # per (variant, epoch) like every other metric; its units (not its requests) count
            # for gates and group-sequential information
            for cell, scores in aggregate.auc_cells(session, e, metric.label).items():
                put(cell, scores, sum(scores.positives) + sum(scores.negatives))
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
    return MetricData(arms, events, segments=segments_data)


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
