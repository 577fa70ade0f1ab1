"""Incremental rollups up to a watermark (all SQL of the rollup tables lives here).

Two levels, both exact and both maintained incrementally:

1. Per-unit rows keyed by (experiment, unit[, outcome name | label and threshold]): every metric
   kind is "unit-level sums first, then across units", and a unit's sums span any time bucket. A
   run folds the events with ids in ``(previous watermark, new watermark]`` into them by upsert
   (``+`` for sums and counts, ``min`` for the first exposure, ``or`` for flags, a merge for the
   unit's latency histogram).
2. Cells (``analysis_cell``): the across-unit sums of every metric family per (variant, weight
   epoch[, bin]) -- exactly what :mod:`abstats.analysis.aggregate` hands to the statistics. A run
   collects the units its new events touch, subtracts their cell contributions as they were,
   folds the events, and adds their contributions as they are now. So a re-analysis reads the new
   events and the touched units' rows, never every unit; the sums it reads are a few rows.

Sums of float values are exact: NUMERIC (latencies and log losses are first rounded to a fixed
resolution and summed as integers, see :func:`fixed_point_sum`), so addition and subtraction are
associative, and cell sums are stored with ``trim_scale``: incremental runs and a rebuild (delete, then one run from
id 0, where the cells are summed once over every unit) agree to the last bit and the last digit,
whatever the batch boundaries.

The variant a unit counts in is that of its first exposure, ordered by ``(ts, variant_id)`` (the
exposure table; a unit with predictions but no exposure is exposed by its first prediction). A
unit seen in more than one variant is marked ``mixed`` and stays in its first variant. The weight
epoch of a unit is derived from ``first_ts`` and the epochs' start times; the cells remember the
start times they were summed with (``analysis_watermark.cell_epochs``). When an epoch is opened
later, only the units first seen at or after its start move (an index range scan on
``first_ts``); any other change of the epoch history re-sums the cells from the per-unit rows.

The watermark (why late commits cannot be missed): identity ids are handed out before a
transaction commits, so a transaction that commits late can make a *lower* id visible after a
higher one was read. A run therefore (1) notes the server time ``t0`` and the highest visible
ids ``H``, (2) waits until no transaction that started at or before ``t0`` is still open (except
other analysis runs, which write no events), and only then (3) folds ids ``<= H``. Any row with an
id below ``H`` got its id before ``t0``, so its transaction started before ``t0`` and has now
committed or aborted: nothing below the new watermark can appear later. (A wait on xids alone,
``pg_snapshot_xmin``, is not enough: COPY allocates ids for a buffer of rows before the transaction
gets an xid.) A transaction idle in transaction without an xid is not waited for: it has inserted
nothing, and any id it takes later is above ``H``. Ingest transactions are short, so the wait is
normally a few milliseconds; when a long transaction holds it past ``wait_seconds`` the run keeps
the previous watermark and says so.

Event tables are only read above the watermark, by index range scans on ``(experiment_id, id)``
(a few per table and run, for the touched units and the different folds), and predictions are
joined to their labels once per run for every classification and AUC metric together.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import text
from sqlalchemy.orm import Session

from abstats.engine.specs import MetricSpec
from abstats.logging import get_logger
from abstats.stats import AUC_CLUSTER_DEGREE, log_spaced_bin_edges

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

# Exact sums of float values. A float8 -> numeric cast per event formats and parses text: it was
# half the cost of a rebuild's per-unit aggregation. So each value is rounded to a fixed number
# of decimals and summed as an integer (exact in any order, like NUMERIC); values too large for
# 64 bits at that resolution are summed as NUMERIC. Latencies are kept to 1e-9 ms, log losses
# (at most -ln(1e-15) = 34.5) to 1e-15.
LATENCY_DIGITS = 9
LOG_LOSS_DIGITS = 15


def fixed_point_sum(column: str, digits: int) -> str:
    """SQL aggregate: the exact NUMERIC sum of ``column`` rounded to ``digits`` decimals (0 when
    every value is NULL)."""
    limit = f"{9.2 * 10 ** (18 - digits):g}"  # |value| * 10^digits must fit a bigint
    return (
        f"(coalesce(sum(({column} * 1e{digits}::float8)::int8) "
        f"FILTER (WHERE abs({column}) < {limit}), 0) * 1e-{digits} "
        f"+ coalesce(sum({column}::numeric) FILTER (WHERE abs({column}) >= {limit}), 0))"
    )


# Memory for the fold's hash joins and aggregations (per plan node, in the database server; the
# analysis process itself only ever receives sums). With the 4 MB default a rebuild spills
# every hash aggregate to disk.
FOLD_WORK_MEM = "256MB"
# Settings of a run's transaction (and of the one-pass limit in tests/perf/bench_analysis.py).
# No JIT: the planner overestimates the fold's joins of aggregated CTEs by orders of magnitude
# (51M rows for 100k units), which switches on JIT inlining and optimisation; compiling then took
# 1.4 s of a 3.7 s statement at 1M predictions (EXPLAIN ANALYZE), more than it could save.
FOLD_SETTINGS = (f"SET LOCAL work_mem = '{FOLD_WORK_MEM}'", "SET LOCAL jit = off")

# --- cell families: the across-unit sums of analysis_cell, element by element --------------------
# Every family's first element counts what contributed, so a cell whose first element is 0 is
# empty (and deleted).
UNIT_SUMS = (
    "units",
    "mixed",
    "requests",
    "requests_sq",
    "errors",
    "errors_sq",
    "errors_requests",
    "latency_n",
    "latency_n_sq",
    "latency_sum",
    "latency_sum_sq",
    "latency_sum_n",
    "latency_units",
)
OUTCOME_SUMS = ("units", "positive", "value", "value_sq", "above_zero", "below_zero")
RATIO_SUMS = ("units", "cross")  # units with both outcomes, sum of numerator * denominator
CONFUSION = ("tp", "fp", "tn", "fn")
CONFUSION_PRODUCTS = tuple(
    f"{a}_{b}" for i, a in enumerate(CONFUSION) for b in CONFUSION[i:]
)  # upper triangle, row by row
CLASS_SUMS = (
    "units",
    *CONFUSION,
    *CONFUSION_PRODUCTS,
    "log_loss_units",
    "log_loss",
    "log_loss_sq",
    "log_loss_n",
    "log_loss_n_sq",
    "log_loss_cross",
)
LATENCY_SUMS = ("requests", "square_increment", "cross_increment")
# attribution windows: over every unit of a (variant, epoch, hour of first exposure), with the
# unit's sum of the outcome within its window (0 without one)
WINDOW_SUMS = ("units", "with_outcome", "positive", "value", "value_sq")
WINDOW_BIN_SECONDS = 3600
# covariate adjustment: y = the unit's outcome (its sum; positive: any value > 0), x = its sum of
# the same outcome over the lookback before its first exposure (0 without one)
CUPED_SUMS = ("units", "y", "y2", "positive", "x", "x2", "xy", "x_positive")

# Products of counts are bigint (exact; they overflow with an error only beyond ~3e9 requests
# of one unit), sums of them numeric; products of NUMERIC sums are NUMERIC.
_UNIT_SQL = (
    "count(*)",
    "count(*) FILTER (WHERE u.mixed)",
    "sum(u.requests)",
    "sum(u.requests * u.requests)",
    "sum(u.errors)",
    "sum(u.errors * u.errors)",
    "sum(u.errors * u.requests)",
    "sum(u.latency_n)",
    "sum(u.latency_n * u.latency_n)",
    "sum(u.latency_sum)",
    "sum(u.latency_sum * u.latency_sum)",
    "sum(u.latency_sum * u.latency_n)",
    "count(*) FILTER (WHERE u.latency_n > 0)",
)
_OUTCOME_SQL = (
    "count(*)",
    "count(*) FILTER (WHERE o.positive)",
    "sum(o.value_sum)",
    "sum(o.value_sum * o.value_sum)",
    "count(*) FILTER (WHERE o.value_sum > 0)",
    "count(*) FILTER (WHERE o.value_sum < 0)",
)
_RATIO_SQL = ("count(*)", "sum(x.value_sum * y.value_sum)")
_CLASS_SQL = (
    "count(*)",
    *(f"sum(c.{a})" for a in CONFUSION),
    *(f"sum(c.{a} * c.{b})" for i, a in enumerate(CONFUSION) for b in CONFUSION[i:]),
    "count(*) FILTER (WHERE c.log_loss_n > 0)",
    "sum(c.log_loss_sum)",
    "sum(c.log_loss_sum * c.log_loss_sum)",
    "sum(c.log_loss_n)",
    "sum(c.log_loss_n * c.log_loss_n)",
    "sum(c.log_loss_sum * c.log_loss_n)",
)
_LATENCY_SQL = (
    "sum(h.requests)",
    "sum(h.requests * (2 * h.below - h.requests))",
    "sum(h.requests * h.total)",
)
assert len(_UNIT_SQL) == len(UNIT_SUMS) and len(_OUTCOME_SQL) == len(OUTCOME_SUMS)
assert len(_RATIO_SQL) == len(RATIO_SUMS) and len(_CLASS_SQL) == len(CLASS_SUMS)
_WINDOW_SQL = (
    "count(*)",
    "count(w.unit_id)",
    "count(*) FILTER (WHERE w.positive)",
    "coalesce(sum(w.value_sum), 0)",
    "coalesce(sum(w.value_sum * w.value_sum), 0)",
)
_CUPED_SQL = (
    "count(*)",
    "coalesce(sum(y.value_sum), 0)",
    "coalesce(sum(y.value_sum * y.value_sum), 0)",
    "count(*) FILTER (WHERE y.positive)",
    "coalesce(sum(x.value_sum), 0)",
    "coalesce(sum(x.value_sum * x.value_sum), 0)",
    "coalesce(sum(x.value_sum * y.value_sum), 0)",
    "coalesce(sum(x.value_sum) FILTER (WHERE y.positive), 0)",
)
assert len(_LATENCY_SQL) == len(LATENCY_SUMS) and len(_WINDOW_SQL) == len(WINDOW_SUMS)
assert len(_CUPED_SQL) == len(CUPED_SUMS)
# AUC: per (variant, epoch, score bin) the labelled requests and the positives among them; per
# (variant, epoch) the units and the Gram sums of their score moments (abstats.stats.ScoreClusters)
AUC_BIN_SUMS = ("requests", "positives")
# a unit's score moments (abstats.stats.ScoreClusters): p0 = its positives, p1..p5 = their sums
# of c, ..., c^5 with c = 2 bin - (B + 1) the bin's code; n0..n5 the same for its negatives
AUC_MOMENTS = tuple(f"{side}{k}" for side in ("p", "n") for k in range(AUC_CLUSTER_DEGREE + 1))
AUC_SUMS = (
    "units",
    *(f"{a}_{b}" for i, a in enumerate(AUC_MOMENTS) for b in AUC_MOMENTS[i:]),
)
_AUC_CODE = f"(2 * bin - {SCORE_BINS + 1})"
_AUC_MOMENT_SQL = ", ".join(
    f"sum({column}{''.join(f' * {_AUC_CODE}' for _ in range(k))})::int8"
    for column in ("positives", "negatives")
    for k in range(AUC_CLUSTER_DEGREE + 1)
)
# a unit's sparse score histogram merged with a fold's (sorted bins, counts per bin)
_AUC_MERGED = """
      SELECT array_agg(m.bin ORDER BY m.bin), array_agg(m.positives ORDER BY m.bin),
             array_agg(m.negatives ORDER BY m.bin)
      FROM (SELECT t.bin, sum(t.positives)::int8 AS positives, sum(t.negatives)::int8 AS negatives
            FROM unnest(a.bins || excluded.bins, a.positives || excluded.positives,
                        a.negatives || excluded.negatives) AS t (bin, positives, negatives)
            GROUP BY t.bin) m
"""
_AUC_SQL = (
    "count(*)",
    *(f"sum(a.{x}::numeric * a.{y})" for i, x in enumerate(AUC_MOMENTS) for y in AUC_MOMENTS[i:]),
)
assert len(_AUC_SQL) == len(AUC_SUMS)
# segments: the outcome over every unit of a (segment, variant, epoch); key [feature, outcome,
# segment]
SEGMENT_SUMS = ("units", "positive", "value", "value_sq")
_SEGMENT_SQL = (
    "count(*)",
    "count(*) FILTER (WHERE o.positive)",
    "coalesce(sum(o.value_sum), 0)",
    "coalesce(sum(o.value_sum * o.value_sum), 0)",
)
assert len(_SEGMENT_SQL) == len(SEGMENT_SUMS)


def ratio_key(numerator: str, denominator: str) -> str:
    """``analysis_cell.key`` of a ratio's cross sums (JSON: names may contain any character)."""
    return json.dumps([numerator, denominator])


def classification_key(label: str, threshold: float) -> str:
    return json.dumps([label, float(threshold)])


def cuped_key(name: str, lookback: int) -> str:
    """``analysis_cell.key`` of an outcome adjusted for its value over ``lookback`` seconds
    before the first exposure."""
    return json.dumps([name, int(lookback)])


def window_key(name: str, seconds: int) -> str:
    """``analysis_cell.key`` of an outcome within an attribution window."""
    return json.dumps([name, int(seconds)])


@dataclass(frozen=True)
class RollupPlan:
    """What the experiment's metrics need rolled up beyond units and prediction sums."""

    outcome_names: tuple[str, ...] = ()
    classification_keys: tuple[tuple[str, float], ...] = ()  # (label outcome, threshold)
    auc_labels: tuple[str, ...] = ()
    latency_quantiles: bool = False
    ratio_pairs: tuple[tuple[str, str], ...] = ()  # (numerator, denominator)
    windows: tuple[tuple[str, int], ...] = ()  # (outcome, attribution window in seconds)
    covariates: tuple[tuple[str, int], ...] = ()  # (outcome, lookback in seconds): CUPED
    segments: tuple[tuple[str, str], ...] = ()  # (feature of the first prediction, outcome)

    @classmethod
    def from_metrics(cls, metrics: list[MetricSpec]) -> RollupPlan:
        outcomes: set[str] = set()
        classification: set[tuple[str, float]] = set()
        auc: set[str] = set()
        ratios: set[tuple[str, str]] = set()
        windows: set[tuple[str, int]] = set()
        covariates: set[tuple[str, int]] = set()
        segments: set[tuple[str, str]] = set()
        quantiles = False
        for metric in metrics:
            if metric.kind in ("proportion", "mean") and metric.outcome:
                outcomes.add(metric.outcome)
                if metric.window_seconds is not None:
                    windows.add((metric.outcome, metric.window_seconds))
                if metric.lookback_seconds is not None:
                    covariates.add((metric.outcome, metric.lookback_seconds))
                if metric.segment_by is not None:
                    segments.add((metric.segment_by, metric.outcome))
            elif metric.kind == "ratio" and metric.numerator and metric.denominator:
                outcomes.update((metric.numerator, metric.denominator))
                ratios.add((metric.numerator, metric.denominator))
            elif metric.kind == "classification" and metric.label:
                if metric.measure == "auc":
                    auc.add(metric.label)
                else:
                    classification.add((metric.label, float(metric.threshold)))
            elif metric.kind == "latency" and metric.statistic != "mean":
                quantiles = True
        return cls(
            tuple(sorted(outcomes)),
            tuple(sorted(classification)),
            tuple(sorted(auc)),
            quantiles,
            tuple(sorted(ratios)),
            tuple(sorted(windows)),
            tuple(sorted(covariates)),
            tuple(sorted(segments)),
        )

    @property
    def segment_features(self) -> tuple[str, ...]:
        return tuple(sorted({feature for feature, _ in self.segments}))

    @property
    def unit_windows(self) -> tuple[tuple[str, int], ...]:
        """Per-unit windowed sums to keep: attribution windows after the first exposure
        (positive seconds) and covariate lookbacks before it (negative seconds)."""
        return self.windows + tuple((name, -lookback) for name, lookback in self.covariates)

    @property
    def labels(self) -> tuple[str, ...]:
        """Label outcomes joined to predictions on ``request_id``."""
        return tuple(
            sorted({label for label, _ in self.classification_keys} | set(self.auc_labels))
        )


@dataclass(frozen=True)
class Watermark:
    exposure_id: int = 0
    prediction_id: int = 0
    outcome_id: int = 0
    max_event_ts: datetime | None = None
    cell_epochs: tuple[datetime, ...] | None = None  # None: no cells summed yet

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
            "SELECT exposure_id, prediction_id, outcome_id, max_event_ts, cell_epochs "
            "FROM analysis_watermark WHERE experiment_id = :e"
        ),
        {"e": experiment_id},
    ).first()
    if row is None:
        return Watermark()
    epochs = None if row[4] is None else tuple(row[4])
    return Watermark(int(row[0]), int(row[1]), int(row[2]), row[3], epochs)


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


def epoch_starts(session: Session, experiment_id: int) -> tuple[datetime, ...]:
    """Start times of the experiment's weight epochs, in epoch order (what cells stratify by)."""
    return tuple(
        session.execute(
            text("SELECT started_at FROM weight_epoch WHERE experiment_id = :e ORDER BY epoch"),
            {"e": experiment_id},
        ).scalars()
    )


EpochChange = Literal["same", "appended", "changed"]


def _epoch_change(
    summed: tuple[datetime, ...] | None, starts: tuple[datetime, ...]
) -> tuple[EpochChange, datetime | None]:
    """How the epoch history changed since the cells were summed; for ``appended``, the start of
    the first new epoch (units first seen from then on change epoch, no other unit does)."""
    if summed is None:
        return "changed", None
    if summed == starts:
        return "same", None
    k = len(summed)
    if (
        k
        and len(starts) > k
        and starts[:k] == summed
        and all(a < b for a, b in itertools.pairwise(starts[k - 1 :]))
    ):
        return "appended", starts[k]
    return "changed", None


def roll_up(
    session: Session,
    experiment_id: int,
    plan: RollupPlan,
    *,
    wait_seconds: float = 5.0,
    until: tuple[int, int, int] | None = None,
) -> RollupResult:
    """Fold every event up to the safe heads into the per-unit rollups and the cells, and move
    the watermark.

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
    return _fold_and_sum(
        session, experiment_id, plan, previous, heads, epoch_starts(session, experiment_id)
    )


def ensure_cell_epochs(
    session: Session, experiment_id: int, plan: RollupPlan, starts: tuple[datetime, ...]
) -> None:
    """Make the cells stratify by ``starts`` (a weight change may have committed after the run's
    fold read the epochs); folds no event."""
    current = read_watermark(session, experiment_id)
    if current.cell_epochs != starts:
        heads = (current.exposure_id, current.prediction_id, current.outcome_id)
        _fold_and_sum(session, experiment_id, plan, current, heads, starts)


def _fold_and_sum(
    session: Session,
    experiment_id: int,
    plan: RollupPlan,
    previous: Watermark,
    heads: tuple[int, int, int],
    starts: tuple[datetime, ...],
) -> RollupResult:
    e_hi = max(heads[0], previous.exposure_id)
    p_hi = max(heads[1], previous.prediction_id)
    o_hi = max(heads[2], previous.outcome_id)
    change, moved_from = _epoch_change(previous.cell_epochs, starts)
    new_events = (e_hi, p_hi, o_hi) != (
        previous.exposure_id,
        previous.prediction_id,
        previous.outcome_id,
    )
    if not new_events and change == "same":
        return RollupResult(previous, previous)
    for setting in FOLD_SETTINGS:
        session.execute(text(setting))
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
    by_delta = change != "changed"
    # A delta reads few new rows and probes the rollups and event tables by index for the units
    # and requests they name; those pages are hot. With the default cost of a random page (4,
    # for disks) the planner hashes whole tables instead: ten times slower. A rebuild reads
    # everything: it keeps the server's setting.
    session.execute(
        text("SET LOCAL random_page_cost = 1.1")
        if by_delta
        else text("SET LOCAL random_page_cost TO DEFAULT")
    )
    collected = by_delta and new_events and bool(plan.labels)
    if collected:
        rows["pairs"] = _collect_pairs(session, params, plan)
    if by_delta:
        # cells lose what the touched units contributed so far (with the epochs they were
        # summed with) ...
        rows["touched"] = _collect_touched(session, params, plan, moved_from, new_events)
        if rows["touched"]:
            assert previous.cell_epochs is not None
            rows["cells"] = _sum_cells(
                session, experiment_id, plan, previous.cell_epochs, touched=True, sign=-1
            )
    # nothing folded yet from a table: its per-unit rows are empty, plain inserts suffice
    first_p, first_o = previous.prediction_id == 0, previous.outcome_id == 0
    if e_hi > previous.exposure_id or p_hi > previous.prediction_id:
        unit_rows, unit_ts = _fold_units(
            session, params, insert_only=first_p and previous.exposure_id == 0
        )
        rows["units"] = unit_rows
        max_ts.append(unit_ts)
        if plan.latency_quantiles and p_hi > previous.prediction_id:
            rows["latency"] = _fold_latency(session, params, insert_only=first_p)
    if o_hi > previous.outcome_id:
        outcome_rows, outcome_ts = _fold_outcomes(
            session, params, plan.outcome_names, insert_only=first_o
        )
        rows["unit_outcomes"] = outcome_rows
        max_ts.append(outcome_ts)
    if plan.unit_windows and (rows.get("touched") or not by_delta):
        # after the units and outcomes: a window starts at the unit's (possibly new) first ts
        rows["windows"] = _refold_windows(session, params, plan, touched=by_delta)
    if plan.segments and (rows.get("touched") or not by_delta):
        rows["segments"] = _refold_segments(session, params, plan, touched=by_delta)
    if plan.labels and (p_hi > previous.prediction_id or o_hi > previous.outcome_id):
        rows.update(
            # a pair needs a folded prediction and a folded label
            _fold_pairs(session, params, plan, insert_only=first_p or first_o, collected=collected)
        )
    _refresh_planner_statistics(session, rows)
    if by_delta:
        # ... and gain what they contribute now
        if rows["touched"]:
            rows["cells"] = rows.get("cells", 0) + _sum_cells(
                session, experiment_id, plan, starts, touched=True, sign=1
            )
            session.execute(
                text("DELETE FROM analysis_cell WHERE experiment_id = :e AND sums[1] = 0"),
                {"e": experiment_id},
            )
    else:
        session.execute(
            text("DELETE FROM analysis_cell WHERE experiment_id = :e"), {"e": experiment_id}
        )
        rows["cells"] = _sum_cells(session, experiment_id, plan, starts, touched=False, sign=1)
    known = [t for t in max_ts if t is not None]
    current = Watermark(e_hi, p_hi, o_hi, max(known) if known else None, starts)
    session.execute(
        text(
            """
            INSERT INTO analysis_watermark AS w
              (experiment_id, exposure_id, prediction_id, outcome_id, drift_prediction_id,
               drift_outcome_id, max_event_ts, cell_epochs, updated_at)
            VALUES (:e, :e_hi, :p_hi, :o_hi, 0, 0, :ts, CAST(:starts AS timestamptz[]), now())
            ON CONFLICT (experiment_id) DO UPDATE SET
              exposure_id = excluded.exposure_id, prediction_id = excluded.prediction_id,
              outcome_id = excluded.outcome_id, max_event_ts = excluded.max_event_ts,
              cell_epochs = excluded.cell_epochs, updated_at = now()
            """
        ),
        {**params, "ts": current.max_event_ts, "starts": list(starts)},
    )
    return RollupResult(previous, current, rows)


_ROW_TABLES = {
    "units": "analysis_unit",
    "unit_outcomes": "analysis_unit_outcome",
    "windows": "analysis_unit_window",
    "segments": "analysis_unit_segment",
    "latency": "analysis_unit_latency",
    "classification": "analysis_unit_classification",
    "auc": "analysis_unit_score",
}


def _refresh_planner_statistics(session: Session, rows: dict[str, int]) -> None:
    """ANALYZE a rollup table when this run changed a fifth of it (or it was never analysed).

    The cell sums join these tables; with no statistics right after a first bulk fold the
    planner picks nested loops that take seconds instead of milliseconds."""
    for key, count in rows.items():
        table = _ROW_TABLES.get(key)
        if table is None or count == 0:
            continue
        tuples = session.execute(
            text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": table}
        ).scalar_one()
        if tuples < 0 or count > 0.2 * tuples:
            session.execute(text(f"ANALYZE {table}"))


def clear_rollups(session: Session, experiment_id: int) -> None:
    """Forget every rollup of the experiment (the first half of a rebuild)."""
    for table in ROLLUP_TABLES:
        session.execute(text(f"DELETE FROM {table} WHERE experiment_id = :e"), {"e": experiment_id})
    session.execute(
        text(
            "UPDATE analysis_watermark SET exposure_id = 0, prediction_id = 0, outcome_id = 0,"
            " max_event_ts = NULL, cell_epochs = NULL WHERE experiment_id = :e"
        ),
        {"e": experiment_id},
    )


# Every rollup table and the order that lists its rows of one experiment canonically.
ROLLUP_TABLES = {
    "analysis_unit": "unit_id",
    "analysis_unit_outcome": "name, unit_id",
    "analysis_unit_window": "name, window_seconds, unit_id",
    "analysis_unit_segment": "feature, unit_id",
    "analysis_unit_classification": "label, threshold, unit_id",
    "analysis_unit_score": "label, unit_id",
    "analysis_unit_latency": "unit_id",
    "analysis_cell": "family, key, variant_id, epoch, bin",
}


# --- the units a run touches, and their cell contributions ----------------------------------------

_TOUCHED_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS analysis_touched (unit_id text PRIMARY KEY) "
    "ON COMMIT DELETE ROWS"
)


def _collect_touched(
    session: Session,
    params: dict[str, object],
    plan: RollupPlan,
    moved_from: datetime | None,
    new_events: bool,
) -> int:
    """Fill ``analysis_touched`` with every unit whose per-unit rows or epoch this run changes:
    units of new exposures, predictions and plan outcomes, units of earlier predictions that a
    new label outcome joins (late labels), and units a new epoch takes over."""
    session.execute(text(_TOUCHED_TABLE))
    session.execute(text("DELETE FROM analysis_touched"))  # an earlier run in this transaction
    parts: list[str] = []
    if new_events:
        parts += [
            "SELECT unit_id FROM exposure WHERE experiment_id = :e AND id > :e_lo AND id <= :e_hi",
            "SELECT unit_id FROM prediction WHERE experiment_id = :e AND id > :p_lo "
            "AND id <= :p_hi",
        ]
        if plan.outcome_names:
            parts.append(
                "SELECT unit_id FROM outcome WHERE experiment_id = :e AND id > :o_lo "
                "AND id <= :o_hi AND name = ANY(:names)"
            )
        if plan.labels:  # the units of earlier predictions that new labels join
            parts.append("SELECT unit_id FROM analysis_pairs")
    if moved_from is not None:
        parts.append(
            "SELECT unit_id FROM analysis_unit WHERE experiment_id = :e AND first_ts >= :moved"
        )
    if not parts:
        return 0
    touched = session.execute(
        text(
            "WITH ins AS (INSERT INTO analysis_touched (unit_id) "
            + " UNION ".join(parts)
            + " RETURNING 1) SELECT count(*) FROM ins"
        ),
        {**params, "names": list(plan.outcome_names), "moved": moved_from},
    ).scalar_one()
    session.execute(text("ANALYZE analysis_touched"))
    return int(touched)


def _array(expressions: tuple[str, ...]) -> str:
    return f"ARRAY[{', '.join(expressions)}]::numeric[]"


def _sum_cells(
    session: Session,
    experiment_id: int,
    plan: RollupPlan,
    starts: tuple[datetime, ...],
    *,
    touched: bool,
    sign: int,
) -> int:
    """Add ``sign`` times the cell sums of the touched units (or of every unit) to
    ``analysis_cell``, with units stratified by ``starts``. Returns the cell rows written."""
    if touched:
        scope = (
            "FROM analysis_touched t JOIN analysis_unit a "
            "ON a.experiment_id = :e AND a.unit_id = t.unit_id"
        )
    else:
        scope = "FROM analysis_unit a WHERE a.experiment_id = :e"
    params: dict[str, object] = {
        "e": experiment_id,
        "starts": list(starts),
        "sign": sign,
        "names": list(plan.outcome_names),
    }
    families = [
        f"SELECT 'unit', '', u.variant_id, u.epoch, 0, {_array(_UNIT_SQL)} "
        "FROM u GROUP BY u.variant_id, u.epoch"
    ]
    if plan.outcome_names:
        families.append(
            f"SELECT 'outcome', o.name, u.variant_id, u.epoch, 0, {_array(_OUTCOME_SQL)} "
            "FROM u JOIN analysis_unit_outcome o ON o.experiment_id = :e "
            "AND o.name = ANY(:names) AND o.unit_id = u.unit_id "
            "GROUP BY o.name, u.variant_id, u.epoch"
        )
    for i, (numerator, denominator) in enumerate(plan.ratio_pairs):
        params.update(
            {
                f"rk{i}": ratio_key(numerator, denominator),
                f"rx{i}": numerator,
                f"ry{i}": denominator,
            }
        )
        families.append(
            f"SELECT 'ratio', CAST(:rk{i} AS text), u.variant_id, u.epoch, 0, "
            f"{_array(_RATIO_SQL)} FROM u "
            f"JOIN analysis_unit_outcome x ON x.experiment_id = :e AND x.name = :rx{i} "
            "AND x.unit_id = u.unit_id "
            f"JOIN analysis_unit_outcome y ON y.experiment_id = :e AND y.name = :ry{i} "
            "AND y.unit_id = u.unit_id GROUP BY u.variant_id, u.epoch"
        )
    for i, (label, threshold) in enumerate(plan.classification_keys):
        params.update(
            {f"ck{i}": classification_key(label, threshold), f"cl{i}": label, f"ct{i}": threshold}
        )
        families.append(
            f"SELECT 'class', CAST(:ck{i} AS text), u.variant_id, u.epoch, 0, "
            f"{_array(_CLASS_SQL)} FROM u "
            f"JOIN analysis_unit_classification c ON c.experiment_id = :e AND c.label = :cl{i} "
            f"AND c.threshold = :ct{i} AND c.unit_id = u.unit_id GROUP BY u.variant_id, u.epoch"
        )
    for i, (name, seconds) in enumerate(plan.windows):
        params.update({f"wk{i}": window_key(name, seconds), f"wn{i}": name, f"ws{i}": seconds})
        families.append(
            f"SELECT 'window', CAST(:wk{i} AS text), u.variant_id, u.epoch, "
            f"floor(extract(epoch FROM u.first_ts) / {WINDOW_BIN_SECONDS})::int AS hour, "
            f"{_array(_WINDOW_SQL)} FROM u "
            f"LEFT JOIN analysis_unit_window w ON w.experiment_id = :e AND w.name = :wn{i} "
            f"AND w.window_seconds = :ws{i} AND w.unit_id = u.unit_id "
            "GROUP BY u.variant_id, u.epoch, hour"
        )
    for i, (name, lookback) in enumerate(plan.covariates):
        params.update({f"xk{i}": cuped_key(name, lookback), f"xn{i}": name, f"xs{i}": -lookback})
        families.append(
            f"SELECT 'cuped', CAST(:xk{i} AS text), u.variant_id, u.epoch, 0, "
            f"{_array(_CUPED_SQL)} FROM u "
            f"LEFT JOIN analysis_unit_outcome y ON y.experiment_id = :e AND y.name = :xn{i} "
            "AND y.unit_id = u.unit_id "
            f"LEFT JOIN analysis_unit_window x ON x.experiment_id = :e AND x.name = :xn{i} "
            f"AND x.window_seconds = :xs{i} AND x.unit_id = u.unit_id "
            "GROUP BY u.variant_id, u.epoch"
        )
    for i, (feature, name) in enumerate(plan.segments):
        params.update({f"gf{i}": feature, f"gn{i}": name})
        families.append(
            f"SELECT 'segment', CAST(json_build_array(CAST(:gf{i} AS text), CAST(:gn{i} AS text), "
            "coalesce(g.segment, '')) AS text) AS key, u.variant_id, u.epoch, 0, "
            f"{_array(_SEGMENT_SQL)} FROM u "
            f"LEFT JOIN analysis_unit_segment g ON g.experiment_id = :e AND g.feature = :gf{i} "
            "AND g.unit_id = u.unit_id "
            f"LEFT JOIN analysis_unit_outcome o ON o.experiment_id = :e AND o.name = :gn{i} "
            "AND o.unit_id = u.unit_id "
            "GROUP BY key, u.variant_id, u.epoch"
        )
    for i, label in enumerate(plan.auc_labels):
        params[f"al{i}"] = label
        # the label counts per score bin, and the Gram sums of the units' score moments
        # (abstats.stats.ScoreClusters: z = positives and their sums of c^1..c^5, then the same
        # for negatives, with c the bin's code 2 bin - (B + 1))
        families.append(
            f"SELECT 'aucbin', CAST(:al{i} AS text), u.variant_id, u.epoch, s.bin, "
            "ARRAY[sum(s.positives + s.negatives), sum(s.positives)]::numeric[] "
            f"FROM u JOIN analysis_unit_score a ON a.experiment_id = :e AND a.label = :al{i} "
            "AND a.unit_id = u.unit_id "
            "CROSS JOIN LATERAL unnest(a.bins, a.positives, a.negatives) AS s (bin, positives, "
            "negatives) GROUP BY u.variant_id, u.epoch, s.bin"
        )
        families.append(
            f"SELECT 'auc', CAST(:al{i} AS text), u.variant_id, u.epoch, 0, {_array(_AUC_SQL)} "
            f"FROM u JOIN analysis_unit_score a ON a.experiment_id = :e AND a.label = :al{i} "
            "AND a.unit_id = u.unit_id GROUP BY u.variant_id, u.epoch"
        )
    if plan.latency_quantiles:
        # per bin of a unit's histogram: its requests c, the unit's requests at or below it L
        # and in all N -> c (2L - c) and c N (see abstats.stats.ClusteredHistogram)
        families.append(
            f"SELECT 'latency', '', h.variant_id, h.epoch, h.bin, {_array(_LATENCY_SQL)} "
            "FROM (SELECT s.variant_id, s.epoch, s.bin, s.below, s.below - s.prev AS requests, "
            "             s.total "
            "      FROM (SELECT u.variant_id, u.epoch, unnest(l.bins) AS bin, "
            "                   unnest(l.at_or_below) AS below, "
            "                   unnest(array_prepend(0::bigint, "
            "                          l.at_or_below[1:cardinality(l.at_or_below) - 1])) AS prev, "
            "                   l.at_or_below[cardinality(l.at_or_below)] AS total "
            "            FROM u JOIN analysis_unit_latency l ON l.experiment_id = :e "
            "            AND l.unit_id = u.unit_id) s) h "
            "GROUP BY h.variant_id, h.epoch, h.bin"
        )
    sql = f"""
    WITH u AS MATERIALIZED (
      SELECT a.unit_id, a.variant_id, a.first_ts,
             greatest(width_bucket(a.first_ts, CAST(:starts AS timestamptz[])), 1) - 1 AS epoch,
             a.mixed, a.requests, a.errors, a.latency_n, a.latency_sum
      {scope}
    ), d (family, key, variant_id, epoch, bin, sums) AS (
      {" UNION ALL ".join(families)}
    ), ins AS (
      INSERT INTO analysis_cell AS c (experiment_id, family, key, variant_id, epoch, bin, sums)
      SELECT :e, d.family, d.key, d.variant_id, d.epoch, d.bin,
             ARRAY(SELECT trim_scale(CAST(:sign AS numeric) * s)
                   FROM unnest(d.sums) WITH ORDINALITY AS t(s, i) ORDER BY i)
      FROM d
      ON CONFLICT (experiment_id, family, key, variant_id, epoch, bin) DO UPDATE SET
        sums = ARRAY(SELECT trim_scale(x + y)
                     FROM unnest(c.sums, excluded.sums) WITH ORDINALITY AS t(x, y, i) ORDER BY i)
      RETURNING 1
    )
    SELECT count(*) FROM ins
    """
    return int(session.execute(text(sql), params).scalar_one())


def _unpack(alias: str) -> str:
    """``unnest`` of a latency histogram row ``alias`` as (bin, at or below, below)."""
    cum = f"{alias}.at_or_below"
    return f"unnest({alias}.bins, {cum}, array_prepend(0::bigint, {cum}[1:cardinality({cum}) - 1]))"


def _refold_windows(
    session: Session, params: dict[str, object], plan: RollupPlan, *, touched: bool
) -> int:
    """Recompute the windowed outcome sums of the touched units (or of every unit) from their
    outcome events up to the watermark: values stamped in ``[first_ts, first_ts + window)``, or
    for a covariate's lookback (negative seconds) in ``[first_ts - lookback, first_ts)``. A
    recomputation, not a fold: a late exposure that moves a unit's first exposure earlier moves
    its window (one index range scan on ``outcome (experiment_id, unit_id)`` per unit)."""
    if touched:
        units = (
            "analysis_touched t JOIN analysis_unit a "
            "ON a.experiment_id = :e AND a.unit_id = t.unit_id"
        )
        forget = (
            "DELETE FROM analysis_unit_window w USING analysis_touched t "
            "WHERE w.experiment_id = :e AND w.name = :name AND w.window_seconds = :seconds "
            "AND w.unit_id = t.unit_id"
        )
    else:
        units = "analysis_unit a"
        forget = (
            "DELETE FROM analysis_unit_window WHERE experiment_id = :e AND name = :name "
            "AND window_seconds = :seconds"
        )
    refold = f"""
    WITH ins AS (
      INSERT INTO analysis_unit_window
        (experiment_id, name, window_seconds, unit_id, value_sum, value_count, positive)
      SELECT :e, :name, :seconds, a.unit_id, coalesce(sum(o.value::numeric), 0), count(*),
             coalesce(bool_or(o.value > 0), false)
      FROM {units}
      JOIN outcome o
        ON o.experiment_id = :e AND o.unit_id = a.unit_id AND o.name = :name AND o.id <= :o_hi
       AND o.ts >= a.first_ts + make_interval(secs => least(:seconds, 0))
       AND o.ts < a.first_ts + make_interval(secs => greatest(:seconds, 0))
      WHERE a.experiment_id = :e
      GROUP BY a.unit_id
      ORDER BY a.unit_id
      RETURNING 1
    )
    SELECT count(*) FROM ins
    """
    written = 0
    for name, seconds in plan.unit_windows:
        values = {**params, "name": name, "seconds": seconds}
        session.execute(text(forget), values)
        written += int(session.execute(text(refold), values).scalar_one())
    return written


def _refold_segments(
    session: Session, params: dict[str, object], plan: RollupPlan, *, touched: bool
) -> int:
    """The segment of the touched units (or of every unit): each feature's value in the unit's
    first prediction, ordered by ``(ts, id)`` ('' when the unit has no prediction or the feature
    is absent). Recomputed, not folded: a late, earlier prediction changes it."""
    if touched:
        units = "analysis_touched t JOIN analysis_unit a ON a.experiment_id = :e AND a.unit_id = t.unit_id"
        forget = (
            "DELETE FROM analysis_unit_segment g USING analysis_touched t "
            "WHERE g.experiment_id = :e AND g.feature = :feature AND g.unit_id = t.unit_id"
        )
    else:
        units = "analysis_unit a"
        forget = "DELETE FROM analysis_unit_segment WHERE experiment_id = :e AND feature = :feature"
    refold = f"""
    WITH ins AS (
      INSERT INTO analysis_unit_segment (experiment_id, feature, unit_id, segment)
      SELECT :e, :feature, a.unit_id, coalesce(
        (SELECT p.features ->> :feature FROM prediction p
         WHERE p.experiment_id = :e AND p.unit_id = a.unit_id AND p.id <= :p_hi
         ORDER BY p.ts, p.id LIMIT 1), '')
      FROM {units}
      WHERE a.experiment_id = :e
      ORDER BY a.unit_id
      RETURNING 1
    )
    SELECT count(*) FROM ins
    """
    written = 0
    for feature in plan.segment_features:
        values = {**params, "feature": feature}
        session.execute(text(forget), values)
        written += int(session.execute(text(refold), values).scalar_one())
    return written


# --- folds: new events into the per-unit rows -------------------------------------------------------

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
         count(latency_ms) AS latency_n, {latency_sum} AS latency_sum
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
).replace("{latency_sum}", fixed_point_sum("latency_ms", LATENCY_DIGITS))


def _upsert(sql: str, insert_only: bool) -> str:
    """``sql`` without its ``ON CONFLICT ... DO UPDATE`` clauses when the target rows cannot
    exist yet (the first fold of a table): a plain insert costs about half as much."""
    return re.sub(r"ON CONFLICT \(.*?(?=RETURNING 1)", "", sql, flags=re.S) if insert_only else sql


def _fold_units(
    session: Session, params: dict[str, object], *, insert_only: bool
) -> tuple[int, datetime | None]:
    row = session.execute(text(_upsert(_FOLD_UNITS, insert_only)), params).one()
    return int(row[0]), row[1]


_FOLD_OUTCOMES = """
WITH o (name, unit_id, value_sum, value_count, positive, last_ts) AS (
  SELECT CASE WHEN name = ANY(:names) THEN name END,
         CASE WHEN name = ANY(:names) THEN unit_id END,
         sum(value::numeric) FILTER (WHERE name = ANY(:names)),
         count(*), bool_or(value > 0), max(ts)
  FROM outcome WHERE experiment_id = :e AND id > :o_lo AND id <= :o_hi
  GROUP BY 1, 2
), ins AS (
  INSERT INTO analysis_unit_outcome AS a
    (experiment_id, name, unit_id, value_sum, value_count, positive, last_ts)
  SELECT :e, name, unit_id, value_sum, value_count, positive, last_ts
  FROM o WHERE name IS NOT NULL ORDER BY name, unit_id
  ON CONFLICT (experiment_id, name, unit_id) DO UPDATE SET
    value_sum = a.value_sum + excluded.value_sum,
    value_count = a.value_count + excluded.value_count,
    positive = a.positive OR excluded.positive,
    last_ts = greatest(a.last_ts, excluded.last_ts)
  RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT max(last_ts) FROM o)
"""


def _fold_outcomes(
    session: Session, params: dict[str, object], names: tuple[str, ...], *, insert_only: bool
) -> tuple[int, datetime | None]:
    """Fold the plan's outcomes per (name, unit); every other outcome only counts for the latest
    event time, in one group (a single pass over the new outcomes either way)."""
    row = session.execute(
        text(_upsert(_FOLD_OUTCOMES, insert_only)), {**params, "names": list(names)}
    ).one()
    return int(row[0]), row[1]


# Prediction/label pairs joined on request_id that are new in this run: new predictions with
# every label so far, plus earlier predictions with new labels (late outcomes). Each pair is
# counted exactly once over all runs. One join serves every classification and AUC metric.
_NEW_PAIRS = """
  SELECT o.name AS label, p.unit_id, p.variant_id, p.score, p.label AS predicted_label,
         o.value AS true_value
  FROM prediction p JOIN outcome o
    ON o.experiment_id = p.experiment_id AND o.request_id = p.request_id
  WHERE p.experiment_id = :e AND p.id > :p_lo AND p.id <= :p_hi AND p.request_id IS NOT NULL
    AND o.name = ANY(:labels) AND o.id <= :o_hi
  UNION ALL
  SELECT o.name, p.unit_id, p.variant_id, p.score, p.label, o.value
  FROM outcome o JOIN prediction p
    ON p.experiment_id = o.experiment_id AND p.request_id = o.request_id
  WHERE o.experiment_id = :e AND o.id > :o_lo AND o.id <= :o_hi AND o.name = ANY(:labels)
    AND o.request_id IS NOT NULL AND p.id <= :p_lo
"""

_PAIRS_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS analysis_pairs (label text, unit_id text, variant_id int, "
    "score float8, predicted_label float8, true_value float8) ON COMMIT DELETE ROWS"
)


def _collect_pairs(session: Session, params: dict[str, object], plan: RollupPlan) -> int:
    """A delta's new pairs, once into ``analysis_pairs``: their units are touched, and every
    classification and AUC metric is folded from them (each probe of the other table is an
    index lookup per new prediction or label, not worth doing twice)."""
    session.execute(text(_PAIRS_TABLE))
    session.execute(text("DELETE FROM analysis_pairs"))  # an earlier run in this transaction
    count = session.execute(
        text(
            "WITH ins AS (INSERT INTO analysis_pairs "
            + _NEW_PAIRS
            + " RETURNING 1) SELECT count(*) FROM ins"
        ),
        {**params, "labels": list(plan.labels)},
    ).scalar_one()
    return int(count)


_FOLD_PAIRS = f"""
WITH pairs AS ({{pairs}}), judged AS (
  SELECT k.label, k.threshold, pairs.unit_id,
         coalesce(pairs.score >= k.threshold, pairs.predicted_label >= 0.5) AS predicted,
         pairs.true_value >= 0.5 AS actual,
         CASE WHEN pairs.score IS NOT NULL THEN
           -(CASE WHEN pairs.true_value >= 0.5
                  THEN ln(least(greatest(pairs.score, :eps), 1 - :eps))
                  ELSE ln(1 - least(greatest(pairs.score, :eps), 1 - :eps)) END)
         END AS loss
  FROM pairs
  JOIN unnest(CAST(:class_labels AS text[]), CAST(:class_thresholds AS float8[]))
    AS k (label, threshold) ON k.label = pairs.label
), per_unit AS (
  SELECT label, threshold, unit_id,
         count(*) FILTER (WHERE predicted AND actual) AS tp,
         count(*) FILTER (WHERE predicted AND NOT actual) AS fp,
         count(*) FILTER (WHERE NOT predicted AND NOT actual) AS tn,
         count(*) FILTER (WHERE NOT predicted AND actual) AS fn,
         {fixed_point_sum("loss", LOG_LOSS_DIGITS)} AS log_loss_sum, count(loss) AS log_loss_n
  FROM judged WHERE predicted IS NOT NULL OR loss IS NOT NULL
  GROUP BY label, threshold, unit_id
), classification AS (
  INSERT INTO analysis_unit_classification AS a
    (experiment_id, label, threshold, unit_id, tp, fp, tn, fn, log_loss_sum, log_loss_n)
  SELECT :e, label, threshold, unit_id, tp, fp, tn, fn, log_loss_sum, log_loss_n
  FROM per_unit ORDER BY label, threshold, unit_id
  ON CONFLICT (experiment_id, label, threshold, unit_id) DO UPDATE SET
    tp = a.tp + excluded.tp, fp = a.fp + excluded.fp, tn = a.tn + excluded.tn,
    fn = a.fn + excluded.fn, log_loss_sum = a.log_loss_sum + excluded.log_loss_sum,
    log_loss_n = a.log_loss_n + excluded.log_loss_n
  RETURNING 1
), binned AS (
  SELECT label, unit_id,
         least(greatest(width_bucket(score, 0, 1, {SCORE_BINS}), 1), {SCORE_BINS})::smallint AS bin,
         count(*) FILTER (WHERE true_value >= 0.5) AS positives,
         count(*) FILTER (WHERE true_value < 0.5) AS negatives
  FROM pairs WHERE score IS NOT NULL AND label = ANY(:auc_labels)
  GROUP BY 1, 2, 3
), auc AS (
  INSERT INTO analysis_unit_score AS a
    (experiment_id, label, unit_id, bins, positives, negatives, {", ".join(AUC_MOMENTS)})
  SELECT :e, label, unit_id, array_agg(bin ORDER BY bin), array_agg(positives ORDER BY bin),
         array_agg(negatives ORDER BY bin), {_AUC_MOMENT_SQL}
  FROM binned GROUP BY label, unit_id ORDER BY label, unit_id
  ON CONFLICT (experiment_id, label, unit_id) DO UPDATE SET
    (bins, positives, negatives) = ({_AUC_MERGED}),
    {", ".join(f"{z} = a.{z} + excluded.{z}" for z in AUC_MOMENTS)}
  RETURNING 1
)
SELECT (SELECT count(*) FROM classification), (SELECT count(*) FROM auc)
"""


def _fold_pairs(
    session: Session,
    params: dict[str, object],
    plan: RollupPlan,
    *,
    insert_only: bool,
    collected: bool,
) -> dict[str, int]:
    """Fold the new pairs into the classification and AUC rollups (``collected``: the pairs are
    in ``analysis_pairs`` already)."""
    pairs = "SELECT * FROM analysis_pairs" if collected else _NEW_PAIRS
    row = session.execute(
        text(_upsert(_FOLD_PAIRS.replace("{pairs}", pairs), insert_only)),
        {
            **params,
            "labels": list(plan.labels),
            "class_labels": [label for label, _ in plan.classification_keys],
            "class_thresholds": [float(t) for _, t in plan.classification_keys],
            "auc_labels": list(plan.auc_labels),
            "eps": LOG_LOSS_EPSILON,
        },
    ).one()
    return {"classification": int(row[0]), "auc": int(row[1])}


def latency_bin_sql(column: str) -> str:
    """SQL bin index (0-based) of :data:`LATENCY_EDGES` for a latency column (see
    :func:`abstats.stats.log_spaced_bin_edges`)."""
    return (
        f"CASE WHEN {column} < {LATENCY_LOW_MS} THEN 0 ELSE least("
        f"1 + floor({LATENCY_BINS_PER_DECADE} * log({column} / {LATENCY_LOW_MS}))::int, "
        f"{LATENCY_LAST_BIN}) END"
    )


def _fold_latency(session: Session, params: dict[str, object], *, insert_only: bool) -> int:
    """Merge the new requests' latency bins into each unit's histogram (sorted bins, cumulative
    counts)."""
    merged = f"""
      SELECT array_agg(m.bin ORDER BY m.bin), array_agg(m.below ORDER BY m.bin)
      FROM (SELECT t.bin, (sum(sum(t.requests)) OVER (ORDER BY t.bin))::bigint AS below
            FROM (SELECT s.bin, s.below - s.prev FROM {_unpack("a")} AS s(bin, below, prev)
                  UNION ALL
                  SELECT s.bin, s.below - s.prev FROM {_unpack("excluded")} AS s(bin, below, prev)
                 ) AS t (bin, requests)
            GROUP BY t.bin) m
    """
    sql = f"""
    WITH binned AS (
      SELECT unit_id, {latency_bin_sql("latency_ms")}::smallint AS bin, count(*) AS requests
      FROM prediction
      WHERE experiment_id = :e AND id > :p_lo AND id <= :p_hi AND latency_ms IS NOT NULL
      GROUP BY 1, 2
    ), cumulated AS (
      SELECT unit_id, bin,
             sum(requests::int4) OVER (PARTITION BY unit_id ORDER BY bin) AS below
      FROM binned
    ), ins AS (
      INSERT INTO analysis_unit_latency AS a (experiment_id, unit_id, bins, at_or_below)
      SELECT :e, unit_id, array_agg(bin ORDER BY bin), array_agg(below ORDER BY bin)
      FROM cumulated GROUP BY unit_id ORDER BY unit_id
      ON CONFLICT (experiment_id, unit_id) DO UPDATE SET (bins, at_or_below) = ({merged})
      RETURNING 1
    )
    SELECT count(*) FROM ins
    """
    return int(session.execute(text(_upsert(sql, insert_only)), params).scalar_one())


def latency_bin_index(value: float) -> int:
    """Python mirror of :func:`latency_bin_sql` (tests)."""
    if value < LATENCY_LOW_MS:
        return 0
    return min(
        1 + math.floor(LATENCY_BINS_PER_DECADE * math.log10(value / LATENCY_LOW_MS)),
        LATENCY_LAST_BIN,
    )
