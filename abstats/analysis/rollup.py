"""Incremental per-unit rollups up to a watermark (all SQL of the rollup tables lives here).

Why per unit: every metric kind is "unit-level sums first, then across units", and a unit's sums
span any time bucket. Per-unit rows keyed by (experiment, unit[, outcome name | label | bin]) are
exact and additive: a run folds the events with ids in ``(previous watermark, new watermark]`` into
them by upsert (``+`` for sums and counts, ``min`` for the first exposure, ``or`` for flags), and a
rebuild (delete, then one run from id 0) produces the same rows. Sums of float values are NUMERIC,
so addition is exact and associative: incremental and rebuild agree to the last bit, whatever
the batch boundaries.

The variant a unit counts in is that of its first exposure, ordered by ``(ts, variant_id)`` (the
exposure table; a unit with predictions but no exposure is exposed by its first prediction). A
unit seen in more than one variant is marked ``mixed`` and stays in its first variant.
The weight epoch is *not* stored: it is derived from ``first_ts`` at aggregation time, so an epoch
opened after some events were rolled up still stratifies them correctly.

The watermark (why late commits cannot be missed): identity ids are handed out before a
transaction commits, so a transaction that commits late can make a *lower* id visible after a
higher one was read. A run therefore (1) notes the server time ``t0`` and the highest visible
ids ``H``, (2) waits until no transaction that started at or before ``t0`` is still open (except
other analysis runs, which write no events), and only then (3) folds ids ``<= H``. Any row with an
id below ``H`` got its id before ``t0``, so its transaction started before ``t0`` and has now
committed or aborted: nothing below the new watermark can appear later. (A wait on xids alone,
``pg_snapshot_xmin``, is not enough: COPY allocates ids for a buffer of rows before the transaction
gets an xid.) A transaction idle in transaction without an xid is not waited for: it has inserted
nothing, and any id it takes later is above ``H``. Ingest transactions are short, so the wait is normally a few milliseconds; when a
long transaction holds it past ``wait_seconds`` the run keeps the previous watermark and says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from abstats.experiments.specs import MetricSpec
from abstats.logging import get_logger
from abstats.stats import log_spaced_bin_edges

log = get_logger(__name__)

# Advisory-lock namespace of analysis runs: held shared by every run, so the watermark wait can
# tell analysis transactions (which never write events) from ingest transactions.
ANALYSIS_LOCK_NAMESPACE = 0x61627374  # "abst"
ANALYSIS_LOCK_RUNS = 5
ANALYSIS_LOCK_EXPERIMENT = 6

# Fixed bins shared by every variant, epoch and run (so rollups stay additive).
SCORE_BINS = 100
LATENCY_LOW_MS = 0.1
LATENCY_HIGH_MS = 600_000.0
LATENCY_BINS_PER_DECADE = 20
LATENCY_EDGES = log_spaced_bin_edges(LATENCY_LOW_MS, LATENCY_HIGH_MS, LATENCY_BINS_PER_DECADE)
LATENCY_LAST_BIN = len(LATENCY_EDGES) - 2
LOG_LOSS_EPSILON = 1e-15


@dataclass(frozen=True)
class RollupPlan:
    """What the experiment's metrics need rolled up beyond units and prediction sums."""

    outcome_names: tuple[str, ...] = ()
    classification_keys: tuple[tuple[str, float], ...] = ()  # (label outcome, threshold)
    auc_labels: tuple[str, ...] = ()
    latency_quantiles: bool = False

    @classmethod
    def from_metrics(cls, metrics: list[MetricSpec]) -> RollupPlan:
        outcomes: set[str] = set()
        classification: set[tuple[str, float]] = set()
        auc: set[str] = set()
        quantiles = False
        for metric in metrics:
            if metric.kind in ("proportion", "mean") and metric.outcome:
                outcomes.add(metric.outcome)
            elif metric.kind == "ratio" and metric.numerator and metric.denominator:
                outcomes.update((metric.numerator, metric.denominator))
            elif metric.kind == "classification" and metric.label:
                if metric.measure == "auc":
                    auc.add(metric.label)
                else:
                    classification.add((metric.label, float(metric.threshold)))
            elif metric.kind == "latency" and metric.statistic != "mean":
                quantiles = True
        return cls(
            tuple(sorted(outcomes)), tuple(sorted(classification)), tuple(sorted(auc)), quantiles
        )


@dataclass(frozen=True)
class Watermark:
    exposure_id: int = 0
    prediction_id: int = 0
    outcome_id: int = 0
    max_event_ts: datetime | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "exposure_id": self.exposure_id,
            "prediction_id": self.prediction_id,
            "outcome_id": self.outcome_id,
            "max_event_ts": self.max_event_ts.isoformat() if self.max_event_ts else None,
        }


@dataclass
class RollupResult:
    previous: Watermark
    current: Watermark
    rows_read: dict[str, int] = field(default_factory=dict)
    held_back_by: list[int] = field(default_factory=list)  # pids of long transactions

    @property
    def advanced(self) -> bool:
        p, c = self.previous, self.current
        return (p.exposure_id, p.prediction_id, p.outcome_id) != (
            c.exposure_id,
            c.prediction_id,
            c.outcome_id,
        )


def lock_analysis(session: Session, experiment_id: int) -> None:
    """Mark this transaction as an analysis run and serialise runs of one experiment."""
    session.execute(
        text("SELECT pg_advisory_xact_lock_shared(:ns, :runs), pg_advisory_xact_lock(:ns2, :e)"),
        {
            "ns": ANALYSIS_LOCK_NAMESPACE,
            "runs": ANALYSIS_LOCK_RUNS,
            "ns2": ANALYSIS_LOCK_NAMESPACE + ANALYSIS_LOCK_EXPERIMENT,
            "e": experiment_id,
        },
    )


def read_watermark(session: Session, experiment_id: int) -> Watermark:
    row = session.execute(
        text(
            "SELECT exposure_id, prediction_id, outcome_id, max_event_ts FROM analysis_watermark "
            "WHERE experiment_id = :e"
        ),
        {"e": experiment_id},
    ).first()
    if row is None:
        return Watermark()
    return Watermark(int(row[0]), int(row[1]), int(row[2]), row[3])


def _visible_heads(session: Session, experiment_id: int) -> tuple[datetime, int, int, int]:
    row = session.execute(
        text(
            "SELECT clock_timestamp(),"
            " (SELECT coalesce(max(id), 0) FROM exposure WHERE experiment_id = :e),"
            " (SELECT coalesce(max(id), 0) FROM prediction WHERE experiment_id = :e),"
            " (SELECT coalesce(max(id), 0) FROM outcome WHERE experiment_id = :e)"
        ),
        {"e": experiment_id},
    ).one()
    return row[0], int(row[1]), int(row[2]), int(row[3])


def _older_open_transactions(session: Session, t0: datetime) -> list[int]:
    """Backends of this database in a transaction that started at or before ``t0`` and may hold
    unpublished event ids, other than analysis runs and ourselves."""
    rows = session.execute(
        text(
            """
            SELECT a.pid FROM pg_stat_activity a
            WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
              AND a.xact_start IS NOT NULL AND a.xact_start <= :t0
              AND a.backend_type = 'client backend'
              -- a transaction idle without an xid has written nothing: any id it takes later
              -- is above H. Writers have an xid; a COPY still buffering rows is 'active'.
              AND (a.backend_xid IS NOT NULL OR a.state <> 'idle in transaction')
              AND NOT EXISTS (
                SELECT 1 FROM pg_locks l
                WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted
                  AND l.classid = :ns AND l.objid = :runs AND l.objsubid = 2)
            """
        ),
        {"t0": t0, "ns": ANALYSIS_LOCK_NAMESPACE, "runs": ANALYSIS_LOCK_RUNS},
    )
    return [int(r[0]) for r in rows]


def safe_heads(
    session: Session, experiment_id: int, *, wait_seconds: float = 5.0
) -> tuple[tuple[int, int, int] | None, list[int]]:
    """The highest ids that can be folded without missing a late commit (see module docstring).

    Returns ``(heads, [])``, or ``(None, blocking_pids)`` when older transactions stayed open for
    ``wait_seconds``."""
    t0, exposure_head, prediction_head, outcome_head = _visible_heads(session, experiment_id)
    deadline = time.monotonic() + wait_seconds
    delay = 0.005
    while True:
        blocking = _older_open_transactions(session, t0)
        if not blocking:
            return (exposure_head, prediction_head, outcome_head), []
        if time.monotonic() >= deadline:
            return None, blocking
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def roll_up(
    session: Session,
    experiment_id: int,
    plan: RollupPlan,
    *,
    wait_seconds: float = 5.0,
    until: tuple[int, int, int] | None = None,
) -> RollupResult:
    """Fold every event up to the safe heads into the per-unit rollups and move the watermark.

    ``until``: fold up to these (exposure, prediction, outcome) ids instead, already known to be
    safe (a rebuild up to the incremental watermark). Call inside the run's transaction after
    :func:`lock_analysis`."""
    previous = read_watermark(session, experiment_id)
    if until is not None:
        heads: tuple[int, int, int] | None = until
        blocking: list[int] = []
    else:
        heads, blocking = safe_heads(session, experiment_id, wait_seconds=wait_seconds)
    if heads is None:
        log.warning(
            "analysis.watermark_held_back",
            experiment_id=experiment_id,
            blocking_pids=blocking,
            detail="transactions older than the run are still open; keeping the previous watermark",
        )
        return RollupResult(previous, previous, held_back_by=blocking)
    e_hi = max(heads[0], previous.exposure_id)
    p_hi = max(heads[1], previous.prediction_id)
    o_hi = max(heads[2], previous.outcome_id)
    params: dict[str, object] = {
        "e": experiment_id,
        "e_lo": previous.exposure_id,
        "e_hi": e_hi,
        "p_lo": previous.prediction_id,
        "p_hi": p_hi,
        "o_lo": previous.outcome_id,
        "o_hi": o_hi,
    }
    rows: dict[str, int] = {}
    max_ts = [previous.max_event_ts]
    if e_hi > previous.exposure_id or p_hi > previous.prediction_id:
        unit_rows, unit_ts = _fold_units(session, params)
        rows["units"] = unit_rows
        max_ts.append(unit_ts)
        if plan.latency_quantiles and p_hi > previous.prediction_id:
            rows["latency_bins"] = _fold_latency_bins(session, params)
    if plan.outcome_names and o_hi > previous.outcome_id:
        outcome_rows, outcome_ts = _fold_outcomes(session, params, plan.outcome_names)
        rows["unit_outcomes"] = outcome_rows
        max_ts.append(outcome_ts)
    elif o_hi > previous.outcome_id:
        max_ts.append(
            session.execute(
                text(
                    "SELECT max(ts) FROM outcome WHERE experiment_id = :e "
                    "AND id > :o_lo AND id <= :o_hi"
                ),
                params,
            ).scalar()
        )
    if p_hi > previous.prediction_id or o_hi > previous.outcome_id:
        for label, threshold in plan.classification_keys:
            rows[f"classification:{label}@{threshold:g}"] = _fold_classification(
                session, params, label, threshold
            )
        for label in plan.auc_labels:
            rows[f"auc:{label}"] = _fold_score_bins(session, params, label)
    _refresh_planner_statistics(session, rows)
    known = [t for t in max_ts if t is not None]
    current = Watermark(e_hi, p_hi, o_hi, max(known) if known else None)
    session.execute(
        text(
            """
            INSERT INTO analysis_watermark AS w
              (experiment_id, exposure_id, prediction_id, outcome_id, drift_prediction_id,
               drift_outcome_id, max_event_ts, updated_at)
            VALUES (:e, :e_hi, :p_hi, :o_hi, 0, 0, :ts, now())
            ON CONFLICT (experiment_id) DO UPDATE SET
              exposure_id = excluded.exposure_id, prediction_id = excluded.prediction_id,
              outcome_id = excluded.outcome_id, max_event_ts = excluded.max_event_ts,
              updated_at = now()
            """
        ),
        {**params, "ts": current.max_event_ts},
    )
    return RollupResult(previous, current, rows)


_ROW_TABLES = {
    "units": "analysis_unit",
    "unit_outcomes": "analysis_unit_outcome",
    "latency_bins": "analysis_unit_latency",
    "classification": "analysis_unit_classification",
    "auc": "analysis_score_bin",
}


def _refresh_planner_statistics(session: Session, rows: dict[str, int]) -> None:
    """ANALYZE a rollup table when this run changed a fifth of it (or it was never analysed).

    The aggregation joins these tables; with no statistics right after a first bulk fold the
    planner picks nested loops that take seconds instead of milliseconds."""
    changed: dict[str, int] = {}
    for key, count in rows.items():
        table = _ROW_TABLES[key.split(":", 1)[0]]
        changed[table] = changed.get(table, 0) + count
    for table, count in changed.items():
        if count == 0:
            continue
        tuples = session.execute(
            text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": table}
        ).scalar_one()
        if tuples < 0 or count > 0.2 * tuples:
            session.execute(text(f"ANALYZE {table}"))


def clear_rollups(session: Session, experiment_id: int) -> None:
    """Forget every rollup of the experiment (the first half of a rebuild)."""
    for table in (
        "analysis_unit",
        "analysis_unit_outcome",
        "analysis_unit_classification",
        "analysis_score_bin",
        "analysis_unit_latency",
    ):
        session.execute(text(f"DELETE FROM {table} WHERE experiment_id = :e"), {"e": experiment_id})
    session.execute(
        text(
            "UPDATE analysis_watermark SET exposure_id = 0, prediction_id = 0, outcome_id = 0,"
            " max_event_ts = NULL WHERE experiment_id = :e"
        ),
        {"e": experiment_id},
    )


_FOLD_UNITS = """
WITH e AS (
  SELECT unit_id, min(ts) AS first_ts, max(ts) AS last_ts,
         min(variant_id) AS vmin, max(variant_id) AS vmax
  FROM exposure WHERE experiment_id = :e AND id > :e_lo AND id <= :e_hi
  GROUP BY unit_id
), p AS (
  SELECT unit_id, min(ts) AS first_ts, max(ts) AS last_ts,
         min(variant_id) AS vmin, max(variant_id) AS vmax,
         count(*) AS requests, count(*) FILTER (WHERE error) AS errors,
         count(latency_ms) AS latency_n, coalesce(sum(latency_ms::numeric), 0) AS latency_sum
  FROM prediction WHERE experiment_id = :e AND id > :p_lo AND id <= :p_hi
  GROUP BY unit_id
), b AS (
  SELECT coalesce(e.unit_id, p.unit_id) AS unit_id,
         e.unit_id IS NOT NULL AS has_exposure,
         CASE WHEN e.unit_id IS NOT NULL THEN e.first_ts ELSE p.first_ts END AS first_ts,
         CASE WHEN e.unit_id IS NOT NULL THEN e.vmin ELSE p.vmin END AS vmin,
         CASE WHEN e.unit_id IS NOT NULL THEN e.vmin <> e.vmax ELSE p.vmin <> p.vmax END
           AS first_source_mixed,
         coalesce(e.vmin <> e.vmax, false) OR coalesce(p.vmin <> p.vmax, false)
           OR coalesce(e.vmin <> p.vmin, false) AS mixed,
         greatest(e.last_ts, p.last_ts) AS last_ts,
         coalesce(p.requests, 0) AS requests, coalesce(p.errors, 0) AS errors,
         coalesce(p.latency_n, 0) AS latency_n, coalesce(p.latency_sum, 0) AS latency_sum
  FROM e FULL JOIN p USING (unit_id)
), exact_e AS (
  -- units whose exposures in this batch name several variants: the earliest (ts, variant_id)
  SELECT x.unit_id, min(x.variant_id) AS variant_id
  FROM b JOIN exposure x ON x.experiment_id = :e AND x.unit_id = b.unit_id AND x.ts = b.first_ts
  WHERE b.has_exposure AND b.first_source_mixed AND x.id > :e_lo AND x.id <= :e_hi
  GROUP BY x.unit_id
), exact_p AS (
  SELECT x.unit_id, min(x.variant_id) AS variant_id
  FROM b JOIN prediction x ON x.experiment_id = :e AND x.unit_id = b.unit_id AND x.ts = b.first_ts
  WHERE NOT b.has_exposure AND b.first_source_mixed AND x.id > :p_lo AND x.id <= :p_hi
  GROUP BY x.unit_id
), ins AS (
  INSERT INTO analysis_unit AS a
    (experiment_id, unit_id, variant_id, first_ts, last_ts, has_exposure, mixed,
     requests, errors, latency_n, latency_sum)
  SELECT :e, b.unit_id, coalesce(exact_e.variant_id, exact_p.variant_id, b.vmin), b.first_ts,
         b.last_ts, b.has_exposure, b.mixed, b.requests, b.errors, b.latency_n, b.latency_sum
  FROM b LEFT JOIN exact_e USING (unit_id) LEFT JOIN exact_p USING (unit_id)
  ORDER BY b.unit_id
  ON CONFLICT (experiment_id, unit_id) DO UPDATE SET
    mixed = a.mixed OR excluded.mixed OR a.variant_id <> excluded.variant_id,
    variant_id = CASE WHEN {better} THEN excluded.variant_id ELSE a.variant_id END,
    first_ts = CASE WHEN {better} THEN excluded.first_ts ELSE a.first_ts END,
    has_exposure = a.has_exposure OR excluded.has_exposure,
    last_ts = greatest(a.last_ts, excluded.last_ts),
    requests = a.requests + excluded.requests,
    errors = a.errors + excluded.errors,
    latency_n = a.latency_n + excluded.latency_n,
    latency_sum = a.latency_sum + excluded.latency_sum
  RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT max(last_ts) FROM b)
""".replace(
    "{better}",
    "((excluded.has_exposure AND NOT a.has_exposure) OR (excluded.has_exposure = a.has_exposure"
    " AND (excluded.first_ts, excluded.variant_id) < (a.first_ts, a.variant_id)))",
)


def _fold_units(session: Session, params: dict[str, object]) -> tuple[int, datetime | None]:
    row = session.execute(text(_FOLD_UNITS), params).one()
    return int(row[0]), row[1]


def _fold_outcomes(
    session: Session, params: dict[str, object], names: tuple[str, ...]
) -> tuple[int, datetime | None]:
    row = session.execute(
        text(
            """
            WITH o AS (
              SELECT name, unit_id, sum(value::numeric) AS value_sum, count(*) AS value_count,
                     bool_or(value > 0) AS positive, max(ts) AS last_ts
              FROM outcome WHERE experiment_id = :e AND id > :o_lo AND id <= :o_hi
              GROUP BY name, unit_id
            ), ins AS (
              INSERT INTO analysis_unit_outcome AS a
                (experiment_id, name, unit_id, value_sum, value_count, positive, last_ts)
              SELECT :e, name, unit_id, value_sum, value_count, positive, last_ts
              FROM o WHERE name = ANY(:names) ORDER BY name, unit_id
              ON CONFLICT (experiment_id, name, unit_id) DO UPDATE SET
                value_sum = a.value_sum + excluded.value_sum,
                value_count = a.value_count + excluded.value_count,
                positive = a.positive OR excluded.positive,
                last_ts = greatest(a.last_ts, excluded.last_ts)
              RETURNING 1
            )
            SELECT (SELECT count(*) FROM ins), (SELECT max(last_ts) FROM o)
            """
        ),
        {**params, "names": list(names)},
    ).one()
    return int(row[0]), row[1]


# Prediction/label pairs joined on request_id that are new in this run: new predictions with
# every label so far, plus earlier predictions with new labels (late outcomes). Each pair is
# counted exactly once over all runs.
_NEW_PAIRS = """
  SELECT p.unit_id, p.variant_id, p.score, p.label AS predicted_label, o.value AS true_value
  FROM prediction p JOIN outcome o
    ON o.experiment_id = p.experiment_id AND o.request_id = p.request_id
  WHERE p.experiment_id = :e AND p.id > :p_lo AND p.id <= :p_hi
    AND o.name = :label AND o.id <= :o_hi AND p.request_id IS NOT NULL
  UNION ALL
  SELECT p.unit_id, p.variant_id, p.score, p.label, o.value
  FROM outcome o JOIN prediction p
    ON p.experiment_id = o.experiment_id AND p.request_id = o.request_id
  WHERE o.experiment_id = :e AND o.id > :o_lo AND o.id <= :o_hi AND o.name = :label
    AND p.id <= :p_lo AND o.request_id IS NOT NULL
"""


def _fold_classification(
    session: Session, params: dict[str, object], label: str, threshold: float
) -> int:
    sql = f"""
    WITH pairs AS ({_NEW_PAIRS}),
    judged AS (
      SELECT unit_id,
             coalesce(score >= :threshold, predicted_label >= 0.5) AS predicted,
             true_value >= 0.5 AS actual,
             CASE WHEN score IS NOT NULL THEN
               -(CASE WHEN true_value >= 0.5
                      THEN ln(least(greatest(score, :eps), 1 - :eps))
                      ELSE ln(1 - least(greatest(score, :eps), 1 - :eps)) END)
             END AS loss
      FROM pairs
    ), per_unit AS (
      SELECT unit_id,
             count(*) FILTER (WHERE predicted AND actual) AS tp,
             count(*) FILTER (WHERE predicted AND NOT actual) AS fp,
             count(*) FILTER (WHERE NOT predicted AND NOT actual) AS tn,
             count(*) FILTER (WHERE NOT predicted AND actual) AS fn,
             coalesce(sum(loss::numeric), 0) AS log_loss_sum, count(loss) AS log_loss_n
      FROM judged WHERE predicted IS NOT NULL OR loss IS NOT NULL
      GROUP BY unit_id
    ), ins AS (
      INSERT INTO analysis_unit_classification AS a
        (experiment_id, label, threshold, unit_id, tp, fp, tn, fn, log_loss_sum, log_loss_n)
      SELECT :e, :label, :threshold, unit_id, tp, fp, tn, fn, log_loss_sum, log_loss_n
      FROM per_unit ORDER BY unit_id
      ON CONFLICT (experiment_id, label, threshold, unit_id) DO UPDATE SET
        tp = a.tp + excluded.tp, fp = a.fp + excluded.fp, tn = a.tn + excluded.tn,
        fn = a.fn + excluded.fn, log_loss_sum = a.log_loss_sum + excluded.log_loss_sum,
        log_loss_n = a.log_loss_n + excluded.log_loss_n
      RETURNING 1
    )
    SELECT count(*) FROM ins
    """
    return int(
        session.execute(
            text(sql),
            {**params, "label": label, "threshold": threshold, "eps": LOG_LOSS_EPSILON},
        ).scalar_one()
    )


def _fold_score_bins(session: Session, params: dict[str, object], label: str) -> int:
    sql = f"""
    WITH pairs AS ({_NEW_PAIRS}),
    binned AS (
      SELECT variant_id, least(greatest(width_bucket(score, 0, 1, {SCORE_BINS}), 1), {SCORE_BINS})
               AS bin,
             count(*) FILTER (WHERE true_value >= 0.5) AS positives,
             count(*) FILTER (WHERE true_value < 0.5) AS negatives
      FROM pairs WHERE score IS NOT NULL
      GROUP BY 1, 2
    ), ins AS (
      INSERT INTO analysis_score_bin AS a
        (experiment_id, label, variant_id, bin, positives, negatives)
      SELECT :e, :label, variant_id, bin, positives, negatives FROM binned
      ON CONFLICT (experiment_id, label, variant_id, bin) DO UPDATE SET
        positives = a.positives + excluded.positives, negatives = a.negatives + excluded.negatives
      RETURNING 1
    )
    SELECT count(*) FROM ins
    """
    return int(session.execute(text(sql), {**params, "label": label}).scalar_one())


def latency_bin_sql(column: str) -> str:
    """SQL bin index (0-based) of :data:`LATENCY_EDGES` for a latency column (see
    :func:`abstats.stats.log_spaced_bin_edges`)."""
    return (
        f"CASE WHEN {column} < {LATENCY_LOW_MS} THEN 0 ELSE least("
        f"1 + floor({LATENCY_BINS_PER_DECADE} * log({column} / {LATENCY_LOW_MS}))::int, "
        f"{LATENCY_LAST_BIN}) END"
    )


def _fold_latency_bins(session: Session, params: dict[str, object]) -> int:
    sql = f"""
    WITH binned AS (
      SELECT unit_id, {latency_bin_sql("latency_ms")} AS bin, count(*) AS count
      FROM prediction
      WHERE experiment_id = :e AND id > :p_lo AND id <= :p_hi AND latency_ms IS NOT NULL
      GROUP BY 1, 2
    ), ins AS (
      INSERT INTO analysis_unit_latency AS a (experiment_id, unit_id, bin, count)
      SELECT :e, unit_id, bin, count FROM binned ORDER BY unit_id, bin
      ON CONFLICT (experiment_id, unit_id, bin) DO UPDATE SET count = a.count + excluded.count
      RETURNING 1
    )
    SELECT count(*) FROM ins
    """
    return int(session.execute(text(sql), params).scalar_one())


def latency_bin_index(value: float) -> int:
    """Python mirror of :func:`latency_bin_sql` (tests)."""
    if value < LATENCY_LOW_MS:
        return 0
    return min(
        1 + math.floor(LATENCY_BINS_PER_DECADE * math.log10(value / LATENCY_LOW_MS)),
        LATENCY_LAST_BIN,
    )
