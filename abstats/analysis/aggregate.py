"""Sufficient statistics per (variant, weight epoch), read from the cell sums that
:mod:`abstats.analysis.rollup` keeps up to date (``analysis_cell``: a few rows per metric).

Only winsorised metrics look further, and only at the top of an index: the cap is a quantile of
the per-unit sums, read by offset from the largest one, and the capped sums are the cell sums
minus what the units above the cap exceed it by. The arithmetic is NUMERIC in SQL, so the result
does not depend on row order: the same rollup rows always give the same bits.

A unit's epoch is that of its first exposure: ``greatest(width_bucket(first_ts, starts), 1) - 1``
where ``starts`` are the epochs' start times the cells were summed with (a unit first seen before
epoch 0 counts in epoch 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from abstats.analysis.rollup import (
    AUC_BIN_SUMS,
    AUC_SUMS,
    CLASS_SUMS,
    CUPED_SUMS,
    LATENCY_EDGES,
    LATENCY_SUMS,
    OUTCOME_SUMS,
    SCORE_BINS,
    SEGMENT_SUMS,
    UNIT_SUMS,
    WINDOW_BIN_SECONDS,
    WINDOW_SUMS,
    classification_key,
    cuped_key,
    ratio_key,
    window_key,
)
from abstats.stats import (
    BinnedScores,
    ClusteredHistogram,
    ConfusionStats,
    CovariateStats,
    MeanStats,
    ProportionStats,
    RatioStats,
    ScoreClusters,
)

Cell = tuple[int, int]  # (variant id, epoch)

# the unit's epoch under the start times the cells were summed with
_EPOCH = (
    "greatest(width_bucket(a.first_ts, (SELECT w.cell_epochs FROM analysis_watermark w "
    "WHERE w.experiment_id = :e)), 1) - 1"
)


def _f(value: Any) -> float:
    return 0.0 if value is None else float(value)


def _i(value: Any) -> int:
    return 0 if value is None else int(value)


def _cells(
    session: Session, experiment_id: int, family: str, key: str = ""
) -> dict[tuple[int, int, int], dict[str, Decimal]]:
    """(variant id, epoch, bin) -> the family's sums by name."""
    names = {
        "unit": UNIT_SUMS,
        "outcome": OUTCOME_SUMS,
        "class": CLASS_SUMS,
        "latency": LATENCY_SUMS,
        "window": WINDOW_SUMS,
        "cuped": CUPED_SUMS,
        "aucbin": AUC_BIN_SUMS,
        "auc": AUC_SUMS,
    }[family]
    rows = session.execute(
        text(
            "SELECT variant_id, epoch, bin, sums FROM analysis_cell "
            "WHERE experiment_id = :e AND family = :family AND key = :key"
        ),
        {"e": experiment_id, "family": family, "key": key},
    )
    return {
        (int(vid), int(epoch), int(bin_)): dict(zip(names, sums, strict=True))
        for vid, epoch, bin_, sums in rows
    }


@dataclass(frozen=True)
class UnitCell:
    """Units of one (variant, epoch) and their prediction sums."""

    units: int
    mixed: int
    requests: int
    latency_units: int  # units with at least one latency
    errors: RatioStats  # x = errors, y = requests per unit
    latency: RatioStats  # x = latency sum, y = latency count per unit


def unit_cells(session: Session, experiment_id: int) -> dict[Cell, UnitCell]:
    cells: dict[Cell, UnitCell] = {}
    for (vid, epoch, _), s in _cells(session, experiment_id, "unit").items():
        n = int(s["units"])
        cells[(vid, epoch)] = UnitCell(
            units=n,
            mixed=int(s["mixed"]),
            requests=int(s["requests"]),
            latency_units=int(s["latency_units"]),
            errors=RatioStats(
                n,
                _f(s["errors"]),
                _f(s["errors_sq"]),
                _f(s["requests"]),
                _f(s["requests_sq"]),
                _f(s["errors_requests"]),
                is_proportion=True,
            ),
            latency=RatioStats(
                n,
                _f(s["latency_sum"]),
                _f(s["latency_sum_sq"]),
                _f(s["latency_n"]),
                _f(s["latency_n_sq"]),
                _f(s["latency_sum_n"]),
            ),
        )
    return cells


def first_unit_seen(session: Session, experiment_id: int) -> datetime | None:
    """The earliest first exposure of any unit (an index lookup)."""
    value: datetime | None = session.execute(
        text("SELECT min(first_ts) FROM analysis_unit WHERE experiment_id = :e"),
        {"e": experiment_id},
    ).scalar()
    return value


def units_first_seen_in(
    session: Session, experiment_id: int, windows: Sequence[tuple[int, datetime, datetime]]
) -> dict[int, dict[int, int]]:
    """Units first seen within each window ``(epoch, start, end)``: epoch -> variant id -> units
    (one index range scan per window on ``analysis_unit (experiment_id, first_ts)``)."""
    if not windows:
        return {}
    rows = session.execute(
        text(
            """
            SELECT w.epoch, u.variant_id, count(*)
            FROM unnest(CAST(:epochs AS int[]), CAST(:starts AS timestamptz[]),
                        CAST(:ends AS timestamptz[])) AS w(epoch, start_ts, end_ts)
            JOIN analysis_unit u
              ON u.experiment_id = :e AND u.first_ts >= w.start_ts AND u.first_ts < w.end_ts
            GROUP BY w.epoch, u.variant_id
            """
        ),
        {
            "e": experiment_id,
            "epochs": [w[0] for w in windows],
            "starts": [w[1] for w in windows],
            "ends": [w[2] for w in windows],
        },
    )
    out: dict[int, dict[int, int]] = {}
    for epoch, variant_id, n in rows:
        out.setdefault(int(epoch), {})[int(variant_id)] = int(n)
    return out


@dataclass(frozen=True)
class OutcomeCell:
    """One outcome over the units of a (variant, epoch); units without it count as 0."""

    proportion: ProportionStats  # units with any value > 0
    mean: MeanStats  # per-unit sum of values
    units_with_outcome: int


def winsorize_cap(session: Session, experiment_id: int, name: str, quantile: float) -> float | None:
    """Upper cap of per-unit sums: their ``quantile`` over all units (units without the outcome
    count as 0), pooled across variants so every arm is capped alike.

    Equal to ``percentile_cont(quantile)`` over every unit, computed the way PostgreSQL does
    (``lo + (hi - lo) * fraction`` between the two neighbouring ranks), but read from the top of
    the ``(experiment_id, name, value_sum)`` index: above a high quantile there are few units.
    With negative sums (where zeros are not at the bottom) it falls back to the full sort."""
    units = sum(int(s["units"]) for s in _cells(session, experiment_id, "unit").values())
    if units == 0:
        return None
    outcome = _cells(session, experiment_id, "outcome", name).values()
    above = sum(int(s["above_zero"]) for s in outcome)
    if any(int(s["below_zero"]) for s in outcome):
        return _winsorize_cap_scan(session, experiment_id, name, quantile)
    position = quantile * (units - 1)
    first, second = math.floor(position), math.ceil(position)
    # rank r from the bottom is offset units - 1 - r from the top; only `above` are not 0
    top_first, top_second = units - 1 - first, units - 1 - second
    values: list[float] = []
    if top_second < above:
        values = [
            float(v)
            for v in session.execute(
                text(
                    """
                    SELECT o.value_sum::float8 FROM analysis_unit_outcome o
                    WHERE o.experiment_id = :e AND o.name = :name AND o.value_sum > 0
                      AND EXISTS (SELECT 1 FROM analysis_unit a
                                  WHERE a.experiment_id = o.experiment_id
                                    AND a.unit_id = o.unit_id)
                    ORDER BY o.value_sum DESC OFFSET :offset LIMIT :n
                    """
                ),
                {
                    "e": experiment_id,
                    "name": name,
                    "offset": top_second,
                    "n": top_first - top_second + 1,
                },
            ).scalars()
        ]

    def at(offset: int) -> float:
        return values[offset - top_second] if offset - top_second < len(values) else 0.0

    low = at(top_first)
    if second == first:
        return low
    high = at(top_second)
    return low + (high - low) * (position - first)


def _winsorize_cap_scan(
    session: Session, experiment_id: int, name: str, quantile: float
) -> float | None:
    value = session.execute(
        text(
            """
            SELECT percentile_cont(:q) WITHIN GROUP (ORDER BY coalesce(o.value_sum, 0)::float8)
            FROM analysis_unit a LEFT JOIN analysis_unit_outcome o
              ON o.experiment_id = a.experiment_id AND o.name = :name AND o.unit_id = a.unit_id
            WHERE a.experiment_id = :e
            """
        ),
        {"e": experiment_id, "name": name, "q": quantile},
    ).scalar()
    return None if value is None else float(value)


# Cap corrections: what the units above the cap exceed it by, per cell (an index range scan).
_OVER_CAP = f"""
  SELECT a.variant_id, {_EPOCH} AS epoch,
         sum(x.value_sum - k.cap) AS dx,
         sum(x.value_sum * x.value_sum - k.cap * k.cap) AS dxx,
         sum((x.value_sum - k.cap) * coalesce(y.value_sum, 0)) AS dxy
  FROM analysis_unit_outcome x
  CROSS JOIN (SELECT CAST(:cap AS numeric) AS cap) k
  JOIN analysis_unit a ON a.experiment_id = x.experiment_id AND a.unit_id = x.unit_id
  LEFT JOIN analysis_unit_outcome y
    ON y.experiment_id = x.experiment_id AND y.name = :den AND y.unit_id = x.unit_id
  WHERE x.experiment_id = :e AND x.name = :num AND x.value_sum > k.cap
  GROUP BY 1, 2
"""

_CELL = (
    "SELECT variant_id, epoch, sums FROM analysis_cell "
    "WHERE experiment_id = :e AND family = '{family}' AND key = {key} AND bin = 0"
)


def outcome_cells(
    session: Session, experiment_id: int, name: str, *, cap: float | None = None
) -> dict[Cell, OutcomeCell]:
    """Per-unit sums of ``name`` (winsorised at ``cap`` when given) over each cell's units."""
    if cap is not None and cap < 0:
        return _outcome_cells_scan(session, experiment_id, name, cap)
    rows = session.execute(
        text(
            f"""
            WITH u AS ({_CELL.format(family="unit", key="''")}),
                 o AS ({_CELL.format(family="outcome", key=":num")}),
                 over AS ({_OVER_CAP})
            SELECT u.variant_id, u.epoch, u.sums[1], coalesce(o.sums[2], 0),
                   coalesce(o.sums[1], 0), coalesce(o.sums[3], 0) - coalesce(v.dx, 0),
                   coalesce(o.sums[4], 0) - coalesce(v.dxx, 0)
            FROM u LEFT JOIN o USING (variant_id, epoch) LEFT JOIN over v USING (variant_id, epoch)
            """
        ),
        {"e": experiment_id, "num": name, "den": "", "cap": cap},
    )
    return {
        (int(r[0]), int(r[1])): OutcomeCell(
            ProportionStats(int(r[2]), int(r[3])),
            MeanStats(int(r[2]), _f(r[5]), _f(r[6])),
            int(r[4]),
        )
        for r in rows
    }


def _outcome_cells_scan(
    session: Session, experiment_id: int, name: str, cap: float
) -> dict[Cell, OutcomeCell]:
    """The same over every unit (a cap below 0 also caps the units without the outcome)."""
    value = "least(coalesce(o.value_sum, 0), CAST(:cap AS numeric))"
    rows = session.execute(
        text(
            f"""
            SELECT a.variant_id, {_EPOCH} AS epoch, count(*),
                   count(*) FILTER (WHERE o.positive), count(o.unit_id),
                   sum({value}), sum({value} * {value})
            FROM analysis_unit a LEFT JOIN analysis_unit_outcome o
              ON o.experiment_id = a.experiment_id AND o.name = :name AND o.unit_id = a.unit_id
            WHERE a.experiment_id = :e
            GROUP BY 1, 2
            """
        ),
        {"e": experiment_id, "name": name, "cap": cap},
    )
    return {
        (int(r[0]), int(r[1])): OutcomeCell(
            ProportionStats(int(r[2]), int(r[3])),
            MeanStats(int(r[2]), _f(r[5]), _f(r[6])),
            int(r[4]),
        )
        for r in rows
    }


def window_cells(
    session: Session, experiment_id: int, name: str, seconds: int, cutoff: datetime
) -> tuple[dict[Cell, OutcomeCell], dict[int, int]]:
    """Per-unit sums of ``name`` within ``seconds`` of each unit's first exposure, over the units
    whose window has closed by ``cutoff``; and the units still pending, per variant id.

    The cells are binned by the hour of the first exposure: an hour counts once every unit of it
    has had its whole window (``hour end + window <= cutoff``), so a unit waits at most an hour
    longer than its own window. Which units count depends only on when they were first exposed,
    never on their outcomes."""
    closed_before = cutoff.timestamp() - seconds
    cells: dict[Cell, list[Decimal]] = {}  # exact sums: the same bits in any row order
    pending: dict[int, int] = {}
    for (vid, epoch, hour), s in _cells(
        session, experiment_id, "window", window_key(name, seconds)
    ).items():
        if (hour + 1) * WINDOW_BIN_SECONDS > closed_before:
            pending[vid] = pending.get(vid, 0) + int(s["units"])
            continue
        acc = cells.setdefault((vid, epoch), [Decimal(0)] * len(WINDOW_SUMS))
        for i, field in enumerate(WINDOW_SUMS):
            acc[i] += s[field]
    return {
        cell: OutcomeCell(
            ProportionStats(int(a[0]), int(a[2])),
            MeanStats(int(a[0]), _f(a[3]), _f(a[4])),
            int(a[1]),
        )
        for cell, a in cells.items()
    }, pending


def cuped_cells(
    session: Session, experiment_id: int, name: str, lookback: int, *, proportion: bool
) -> dict[Cell, CovariateStats]:
    """Per cell, the units' outcome ``y`` (its sum, or for a proportion whether any value was
    > 0) and covariate ``x`` (the outcome's sum over ``lookback`` seconds before the first
    exposure): the sums :func:`abstats.stats.cuped` needs."""
    cells: dict[Cell, CovariateStats] = {}
    for (vid, epoch, _), s in _cells(
        session, experiment_id, "cuped", cuped_key(name, lookback)
    ).items():
        if proportion:  # y is 0/1: y^2 = y, x y = x over the positive units
            y, y2, xy = s["positive"], s["positive"], s["x_positive"]
        else:
            y, y2, xy = s["y"], s["y2"], s["xy"]
        cells[(vid, epoch)] = CovariateStats(
            int(s["units"]), _f(y), _f(y2), _f(s["x"]), _f(s["x2"]), _f(xy)
        )
    return cells


def segment_cells(
    session: Session, experiment_id: int, feature: str, name: str
) -> dict[str, dict[Cell, OutcomeCell]]:
    """Segment (the feature's value in each unit's first prediction, '' without) -> per cell the
    outcome ``name`` over the segment's units (units without the outcome count as 0)."""
    rows = session.execute(
        text(
            """
            SELECT CAST(key AS jsonb) ->> 2, variant_id, epoch, sums FROM analysis_cell
            WHERE experiment_id = :e AND family = 'segment'
              AND CAST(key AS jsonb) ->> 0 = :feature AND CAST(key AS jsonb) ->> 1 = :name
            """
        ),
        {"e": experiment_id, "feature": feature, "name": name},
    )
    out: dict[str, dict[Cell, OutcomeCell]] = {}
    for segment, vid, epoch, sums in rows:
        s = dict(zip(SEGMENT_SUMS, sums, strict=True))
        n = int(s["units"])
        out.setdefault(str(segment), {})[(int(vid), int(epoch))] = OutcomeCell(
            ProportionStats(n, int(s["positive"])),
            MeanStats(n, _f(s["value"]), _f(s["value_sq"])),
            n,
        )
    return out


def ratio_cells(
    session: Session,
    experiment_id: int,
    numerator: str,
    denominator: str,
    *,
    cap: float | None = None,
) -> dict[Cell, tuple[RatioStats, int]]:
    """Per unit x = sum of ``numerator`` (winsorised at ``cap``), y = sum of ``denominator``;
    also the units with y > 0."""
    if cap is not None and cap < 0:
        return _ratio_cells_scan(session, experiment_id, numerator, denominator, cap)
    rows = session.execute(
        text(
            f"""
            WITH u AS ({_CELL.format(family="unit", key="''")}),
                 x AS ({_CELL.format(family="outcome", key=":num")}),
                 y AS ({_CELL.format(family="outcome", key=":den")}),
                 r AS ({_CELL.format(family="ratio", key=":ratio")}),
                 over AS ({_OVER_CAP})
            SELECT u.variant_id, u.epoch, u.sums[1],
                   coalesce(x.sums[3], 0) - coalesce(v.dx, 0),
                   coalesce(x.sums[4], 0) - coalesce(v.dxx, 0),
                   coalesce(y.sums[3], 0), coalesce(y.sums[4], 0),
                   coalesce(r.sums[2], 0) - coalesce(v.dxy, 0),
                   coalesce(y.sums[5], 0)
            FROM u LEFT JOIN x USING (variant_id, epoch) LEFT JOIN y USING (variant_id, epoch)
                   LEFT JOIN r USING (variant_id, epoch) LEFT JOIN over v USING (variant_id, epoch)
            """
        ),
        {
            "e": experiment_id,
            "num": numerator,
            "den": denominator,
            "ratio": ratio_key(numerator, denominator),
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


def _ratio_cells_scan(
    session: Session, experiment_id: int, numerator: str, denominator: str, cap: float
) -> dict[Cell, tuple[RatioStats, int]]:
    x = "least(coalesce(num.value_sum, 0), CAST(:cap AS numeric))"
    y = "coalesce(den.value_sum, 0)"
    rows = session.execute(
        text(
            f"""
            SELECT a.variant_id, {_EPOCH} AS epoch, count(*),
                   sum({x}), sum({x} * {x}), sum({y}), sum({y} * {y}), sum({x} * {y}),
                   count(*) FILTER (WHERE den.value_sum > 0)
            FROM analysis_unit a
            LEFT JOIN analysis_unit_outcome num
              ON num.experiment_id = a.experiment_id AND num.name = :num AND num.unit_id = a.unit_id
            LEFT JOIN analysis_unit_outcome den
              ON den.experiment_id = a.experiment_id AND den.name = :den AND den.unit_id = a.unit_id
            WHERE a.experiment_id = :e
            GROUP BY 1, 2
            """
        ),
        {"e": experiment_id, "num": numerator, "den": denominator, "cap": cap},
    )
    return {
        (int(r[0]), int(r[1])): (
            RatioStats(int(r[2]), _f(r[3]), _f(r[4]), _f(r[5]), _f(r[6]), _f(r[7])),
            int(r[8]),
        )
        for r in rows
    }


def classification_cells(
    session: Session, experiment_id: int, label: str, threshold: float
) -> dict[Cell, tuple[ConfusionStats, RatioStats]]:
    """Confusion sums and cross products over units with labelled requests, and log loss as a
    ratio (x = the unit's summed loss, y = its scored requests)."""
    key = classification_key(label, threshold)
    cells: dict[Cell, tuple[ConfusionStats, RatioStats]] = {}
    for (vid, epoch, _), s in _cells(session, experiment_id, "class", key).items():
        sums = tuple(_f(s[name]) for name in ("tp", "fp", "tn", "fn"))
        names = ("tp", "fp", "tn", "fn")
        matrix = [[0.0] * 4 for _ in range(4)]
        for i in range(4):
            for j in range(i, 4):
                matrix[i][j] = matrix[j][i] = _f(s[f"{names[i]}_{names[j]}"])
        confusion = ConfusionStats(
            int(s["units"]),
            (sums[0], sums[1], sums[2], sums[3]),
            tuple(tuple(row) for row in matrix),
        )
        log_loss = RatioStats(
            int(s["log_loss_units"]),
            _f(s["log_loss"]),
            _f(s["log_loss_sq"]),
            _f(s["log_loss_n"]),
            _f(s["log_loss_n_sq"]),
            _f(s["log_loss_cross"]),
        )
        cells[(vid, epoch)] = (confusion, log_loss)
    return cells


def auc_cells(session: Session, experiment_id: int, label: str) -> dict[Cell, BinnedScores]:
    """Label counts per score bin and the units' score moments per (variant, epoch): AUC with
    DeLong's variance clustered by unit, stratified by weight epoch like every other metric."""
    counts: dict[Cell, tuple[list[int], list[int]]] = {}
    for (vid, epoch, bin_), s in _cells(session, experiment_id, "aucbin", label).items():
        positives, negatives = counts.setdefault((vid, epoch), ([0] * SCORE_BINS, [0] * SCORE_BINS))
        positives[bin_ - 1] = _i(s["positives"])
        negatives[bin_ - 1] = _i(s["requests"]) - _i(s["positives"])
    clusters = {
        (vid, epoch): ScoreClusters(_i(s["units"]), tuple(_f(s[name]) for name in AUC_SUMS[1:]))
        for (vid, epoch, _), s in _cells(session, experiment_id, "auc", label).items()
    }
    return {
        cell: BinnedScores(
            tuple(pos),
            tuple(neg),
            clusters[cell].units if cell in clusters else None,
            clusters.get(cell),
        )
        for cell, (pos, neg) in counts.items()
    }


def latency_histograms(session: Session, experiment_id: int) -> dict[Cell, ClusteredHistogram]:
    """The clustered-quantile inputs (see :class:`abstats.stats.ClusteredHistogram`)."""
    bins = len(LATENCY_EDGES) - 1
    acc: dict[Cell, tuple[list[int], list[float], list[float]]] = {}
    for (vid, epoch, bin_), s in _cells(session, experiment_id, "latency").items():
        counts, squares, crosses = acc.setdefault(
            (vid, epoch), ([0] * bins, [0.0] * bins, [0.0] * bins)
        )
        counts[bin_] = _i(s["requests"])
        squares[bin_] = _f(s["square_increment"])
        crosses[bin_] = _f(s["cross_increment"])
    units = {cell: uc.latency_units for cell, uc in unit_cells(session, experiment_id).items()}
    return {
        cell: ClusteredHistogram(LATENCY_EDGES, tuple(c), tuple(s), tuple(x), units.get(cell, 0))
        for cell, (c, s, x) in acc.items()
    }
