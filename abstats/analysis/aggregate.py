"""Sufficient statistics per (variant, weight epoch), aggregated in SQL from the per-unit rollups.

Every query here reads rollup tables (one row per unit, or per unit and bin), never raw events,
and returns a handful of sums per (variant id, epoch). Sums are NUMERIC in SQL, so the result does
not depend on row order: the same rollup rows always give the same bits.

A unit's epoch is that of its first exposure: ``greatest(width_bucket(first_ts, starts), 1) - 1``
where ``starts`` are the epochs' start times (a unit first seen before epoch 0 counts in epoch 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from abstats.analysis.rollup import LATENCY_EDGES, SCORE_BINS
from abstats.stats import (
    BinnedScores,
    ClusteredHistogram,
    ConfusionStats,
    MeanStats,
    ProportionStats,
    RatioStats,
)

Cell = tuple[int, int]  # (variant id, epoch)

_EPOCH = "greatest(width_bucket(u.first_ts, CAST(:starts AS timestamptz[])), 1) - 1"


def _f(value: Any) -> float:
    return 0.0 if value is None else float(value)


def _i(value: Any) -> int:
    return 0 if value is None else int(value)


@dataclass(frozen=True)
class UnitCell:
    """Units of one (variant, epoch) and their prediction sums."""

    units: int
    mixed: int
    first_ts: datetime | None
    last_ts: datetime | None
    requests: int
    errors: RatioStats  # x = errors, y = requests per unit
    latency: RatioStats  # x = latency sum, y = latency count per unit


def unit_cells(
    session: Session, experiment_id: int, starts: Sequence[datetime]
) -> dict[Cell, UnitCell]:
    rows = session.execute(
        text(
            f"""
            SELECT u.variant_id, {_EPOCH} AS epoch, count(*), count(*) FILTER (WHERE u.mixed),
                   min(u.first_ts), max(u.last_ts),
                   sum(u.requests), sum(u.requests::numeric * u.requests),
                   sum(u.errors), sum(u.errors::numeric * u.errors),
                   sum(u.errors::numeric * u.requests),
                   sum(u.latency_n), sum(u.latency_n::numeric * u.latency_n),
                   sum(u.latency_sum), sum(u.latency_sum * u.latency_sum),
                   sum(u.latency_sum * u.latency_n)
            FROM analysis_unit u WHERE u.experiment_id = :e
            GROUP BY 1, 2
            """
        ),
        {"e": experiment_id, "starts": list(starts)},
    )
    cells: dict[Cell, UnitCell] = {}
    for r in rows:
        n = int(r[2])
        cells[(int(r[0]), int(r[1]))] = UnitCell(
            units=n,
            mixed=int(r[3]),
            first_ts=r[4],
            last_ts=r[5],
            requests=_i(r[6]),
            errors=RatioStats(
                n, _f(r[8]), _f(r[9]), _f(r[6]), _f(r[7]), _f(r[10]), is_proportion=True
            ),
            latency=RatioStats(n, _f(r[13]), _f(r[14]), _f(r[11]), _f(r[12]), _f(r[15])),
        )
    return cells


@dataclass(frozen=True)
class OutcomeCell:
    """One outcome over the units of a (variant, epoch); units without it count as 0."""

    proportion: ProportionStats  # units with any value > 0
    mean: MeanStats  # per-unit sum of values
    units_with_outcome: int


def winsorize_cap(session: Session, experiment_id: int, name: str, quantile: float) -> float | None:
    """Upper cap of per-unit sums: their ``quantile`` over all units (units without the outcome
    count as 0), pooled across variants so every arm is capped alike."""
    value = session.execute(
        text(
            """
            SELECT percentile_cont(:q) WITHIN GROUP (ORDER BY coalesce(o.value_sum, 0)::float8)
            FROM analysis_unit u LEFT JOIN analysis_unit_outcome o
              ON o.experiment_id = u.experiment_id AND o.name = :name AND o.unit_id = u.unit_id
            WHERE u.experiment_id = :e
            """
        ),
        {"e": experiment_id, "name": name, "q": quantile},
    ).scalar()
    return None if value is None else float(value)


def outcome_cells(
    session: Session,
    experiment_id: int,
    starts: Sequence[datetime],
    name: str,
    *,
    cap: float | None = None,
) -> dict[Cell, OutcomeCell]:
    value = "coalesce(o.value_sum, 0)"
    if cap is not None:
        value = f"least({value}, CAST(:cap AS numeric))"
    rows = session.execute(
        text(
            f"""
            SELECT u.variant_id, {_EPOCH} AS epoch, count(*),
                   count(*) FILTER (WHERE o.positive), count(o.unit_id),
                   sum({value}), sum({value} * {value})
            FROM analysis_unit u LEFT JOIN analysis_unit_outcome o
              ON o.experiment_id = u.experiment_id AND o.name = :name AND o.unit_id = u.unit_id
            WHERE u.experiment_id = :e
            GROUP BY 1, 2
            """
        ),
        {"e": experiment_id, "starts": list(starts), "name": name, "cap": cap},
    )
    return {
        (int(r[0]), int(r[1])): OutcomeCell(
            ProportionStats(int(r[2]), int(r[3])),
            MeanStats(int(r[2]), _f(r[5]), _f(r[6])),
            int(r[4]),
        )
        for r in rows
    }


def ratio_cells(
    session: Session,
    experiment_id: int,
    starts: Sequence[datetime],
    numerator: str,
    denominator: str,
    *,
    cap: float | None = None,
) -> dict[Cell, tuple[RatioStats, int]]:
    """Per unit x = sum of ``numerator``, y = sum of ``denominator``; also the units with y > 0."""
    x = "coalesce(num.value_sum, 0)"
    if cap is not None:
        x = f"least({x}, CAST(:cap AS numeric))"
    y = "coalesce(den.value_sum, 0)"
    rows = session.execute(
        text(
            f"""
            SELECT u.variant_id, {_EPOCH} AS epoch, count(*),
                   sum({x}), sum({x} * {x}), sum({y}), sum({y} * {y}), sum({x} * {y}),
                   count(*) FILTER (WHERE den.value_sum > 0)
            FROM analysis_unit u
            LEFT JOIN analysis_unit_outcome num
              ON num.experiment_id = u.experiment_id AND num.name = :num AND num.unit_id = u.unit_id
            LEFT JOIN analysis_unit_outcome den
              ON den.experiment_id = u.experiment_id AND den.name = :den AND den.unit_id = u.unit_id
            WHERE u.experiment_id = :e
            GROUP BY 1, 2
            """
        ),
        {
            "e": experiment_id,
            "starts": list(starts),
            "num": numerator,
            "den": denominator,
            "cap": cap,
        },
    )
    return {
        (int(r[0]), int(r[1])): (
            RatioStats(int(r[2]), _f(r[3]), _f(r[4]), _f(r[5]), _f(r[6]), _f(r[7])),
            int(r[8]),
        )
        for r in rows
    }


_CONFUSION = ("tp", "fp", "tn", "fn")


def classification_cells(
    session: Session, experiment_id: int, starts: Sequence[datetime], label: str, threshold: float
) -> dict[Cell, tuple[ConfusionStats, RatioStats]]:
    """Confusion sums and cross products over units with labelled requests, and log loss as a
    ratio (x = the unit's summed loss, y = its scored requests)."""
    products = [
        f"sum(c.{a}::numeric * c.{b})" for i, a in enumerate(_CONFUSION) for b in _CONFUSION[i:]
    ]
    rows = session.execute(
        text(
            f"""
            SELECT u.variant_id, {_EPOCH} AS epoch, count(*),
                   sum(c.tp), sum(c.fp), sum(c.tn), sum(c.fn), {", ".join(products)},
                   count(*) FILTER (WHERE c.log_loss_n > 0),
                   sum(c.log_loss_sum), sum(c.log_loss_sum * c.log_loss_sum),
                   sum(c.log_loss_n), sum(c.log_loss_n::numeric * c.log_loss_n),
                   sum(c.log_loss_sum * c.log_loss_n)
            FROM analysis_unit_classification c
            JOIN analysis_unit u ON u.experiment_id = c.experiment_id AND u.unit_id = c.unit_id
            WHERE c.experiment_id = :e AND c.label = :label AND c.threshold = :threshold
            GROUP BY 1, 2
            """
        ),
        {"e": experiment_id, "starts": list(starts), "label": label, "threshold": threshold},
    )
    cells: dict[Cell, tuple[ConfusionStats, RatioStats]] = {}
    for r in rows:
        sums = (_f(r[3]), _f(r[4]), _f(r[5]), _f(r[6]))
        flat = [_f(v) for v in r[7:17]]
        matrix = [[0.0] * 4 for _ in range(4)]
        k = 0
        for i in range(4):
            for j in range(i, 4):
                matrix[i][j] = matrix[j][i] = flat[k]
                k += 1
        confusion = ConfusionStats(int(r[2]), sums, tuple(tuple(row) for row in matrix))
        log_loss = RatioStats(int(r[17]), _f(r[18]), _f(r[19]), _f(r[20]), _f(r[21]), _f(r[22]))
        cells[(int(r[0]), int(r[1]))] = (confusion, log_loss)
    return cells


def auc_by_variant(session: Session, experiment_id: int, label: str) -> dict[int, BinnedScores]:
    """Label counts per score bin, by the variant that served the prediction (pooled over
    epochs: DeLong's AUC has no stratified form here)."""
    rows = session.execute(
        text(
            """
            SELECT variant_id, bin, positives, negatives FROM analysis_score_bin
            WHERE experiment_id = :e AND label = :label
            """
        ),
        {"e": experiment_id, "label": label},
    )
    positives: dict[int, list[int]] = {}
    negatives: dict[int, list[int]] = {}
    for vid, bin_, pos, neg in rows:
        positives.setdefault(int(vid), [0] * SCORE_BINS)[int(bin_) - 1] = int(pos)
        negatives.setdefault(int(vid), [0] * SCORE_BINS)[int(bin_) - 1] = int(neg)
    return {vid: BinnedScores(tuple(positives[vid]), tuple(negatives[vid])) for vid in positives}


def latency_histograms(
    session: Session, experiment_id: int, starts: Sequence[datetime]
) -> dict[Cell, ClusteredHistogram]:
    """The clustered-quantile inputs (see :class:`abstats.stats.ClusteredHistogram`)."""
    bins = len(LATENCY_EDGES) - 1
    rows = session.execute(
        text(
            f"""
            WITH cells AS (
              SELECT u.variant_id, {_EPOCH} AS epoch, l.unit_id, l.bin, l.count
              FROM analysis_unit_latency l
              JOIN analysis_unit u ON u.experiment_id = l.experiment_id AND u.unit_id = l.unit_id
              WHERE l.experiment_id = :e
            ), totals AS (
              SELECT variant_id, epoch, bin, count,
                     sum(count) OVER (PARTITION BY unit_id ORDER BY bin) AS below,
                     sum(count) OVER (PARTITION BY unit_id) AS total
              FROM cells
            )
            SELECT variant_id, epoch, bin, sum(count), sum(count * (2 * below - count)),
                   sum(count * total)
            FROM totals GROUP BY 1, 2, 3
            """
        ),
        {"e": experiment_id, "starts": list(starts)},
    )
    acc: dict[Cell, tuple[list[int], list[float], list[float]]] = {}
    for vid, epoch, bin_, count, square, cross in rows:
        counts, squares, crosses = acc.setdefault(
            (int(vid), int(epoch)), ([0] * bins, [0.0] * bins, [0.0] * bins)
        )
        counts[int(bin_)] = int(count)
        squares[int(bin_)] = _f(square)
        crosses[int(bin_)] = _f(cross)
    units = session.execute(
        text(
            f"""
            SELECT u.variant_id, {_EPOCH} AS epoch, count(*) FROM analysis_unit u
            WHERE u.experiment_id = :e AND u.latency_n > 0 GROUP BY 1, 2
            """
        ),
        {"e": experiment_id, "starts": list(starts)},
    )
    unit_counts = {(int(v), int(ep)): int(n) for v, ep, n in units}
    return {
        cell: ClusteredHistogram(
            LATENCY_EDGES, tuple(c), tuple(s), tuple(x), unit_counts.get(cell, 0)
        )
        for cell, (c, s, x) in acc.items()
    }
