"""CUPED from the rollups (issue 17): the per-cell sums of y, x, x^2, y^2 and xy equal a brute-force
computation (x: the unit's outcome over the lookback before its first exposure), incremental runs
equal a rebuild exactly, and the snapshot shows the adjusted and the raw effect."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
from sqlalchemy.orm import Session

from abstats.analysis import aggregate
from abstats.analysis.rollup import RollupPlan, clear_rollups, lock_analysis, roll_up
from abstats.db.models import Experiment
from abstats.engine.specs import MetricSpec
from abstats.stats import CovariateStats

from .conftest import T0, Events, make_experiment, write_events
from .test_rollup import rollup_rows

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
METRICS = [
    {
        "key": "revenue",
        "kind": "mean",
        "outcome": "revenue",
        "role": "primary",
        "direction": "increase",
        "covariate": "pre_exposure",
        "lookback": "7d",
    },
    {"key": "bought", "kind": "proportion", "outcome": "revenue", "covariate": "pre_exposure"},
]
EPOCH1 = T0 + 2 * DAY


def _run(session: Session, experiment: Experiment) -> None:
    plan = RollupPlan.from_metrics([MetricSpec.model_validate(m) for m in METRICS])
    lock_analysis(session, experiment.id)
    assert not roll_up(session, experiment.id, plan, wait_seconds=1).held_back_by


def _batch(rng: np.random.Generator, prefix: str, units: int, lift: float = 0.0) -> Events:
    """Each unit has a spending level; it spends before its exposure (some of it more than 7 days
    before) and after it, in proportion to that level."""
    ev = Events()
    for i in range(units):
        unit = f"{prefix}{i}"
        first = T0 + timedelta(hours=float(rng.uniform(0, 96)))
        variant = "control" if rng.random() < 0.5 else "treatment"
        ev.exposures.append({"variant": variant, "unit_id": unit, "ts": first})
        level = float(rng.gamma(2.0, 5.0))
        for _ in range(int(rng.poisson(2))):
            ago = timedelta(days=float(rng.uniform(0, 9)))
            value = float(rng.normal(level, 2.0))
            ev.outcomes.append(
                {"unit_id": unit, "name": "revenue", "value": value, "ts": first - ago}
            )
        if rng.random() < 0.8:
            scale = 1 + (lift if variant == "treatment" else 0.0)
            ev.outcomes.append(
                {
                    "unit_id": unit,
                    "name": "revenue",
                    "value": float(rng.normal(level * scale, 2.0)),
                    "ts": first + HOUR,
                }
            )
    return ev


def _reference(
    experiment: Experiment, events: Events, lookback: timedelta
) -> dict[tuple[int, int], list[float]]:
    vid = {v.key: v.id for v in experiment.variants}
    first: dict[str, tuple[object, int]] = {}
    for x in events.exposures:
        key = (x["ts"], vid[x["variant"]])
        if x["unit_id"] not in first or key < first[x["unit_id"]]:  # type: ignore[operator]
            first[x["unit_id"]] = key
    y: dict[str, float] = {}
    positive: dict[str, bool] = {}
    pre: dict[str, float] = {}
    for o in events.outcomes:
        unit = o["unit_id"]
        y[unit] = y.get(unit, 0.0) + o["value"]
        positive[unit] = positive.get(unit, False) or o["value"] > 0
        ts = first[unit][0]
        if ts - lookback <= o["ts"] < ts:  # type: ignore[operator]
            pre[unit] = pre.get(unit, 0.0) + o["value"]
    cells: dict[tuple[int, int], list[float]] = {}
    for unit, (ts, variant) in first.items():
        c = cells.setdefault((variant, 0 if ts < EPOCH1 else 1), [0.0] * 8)  # type: ignore[operator]
        yy, xx, pp = y.get(unit, 0.0), pre.get(unit, 0.0), float(positive.get(unit, False))
        for i, v in enumerate((1, yy, yy * yy, xx, xx * xx, xx * yy, pp, xx * pp)):
            c[i] += v
    return cells


def _check(session: Session, experiment: Experiment, events: Events) -> dict[str, object]:
    ref = _reference(experiment, events, 7 * DAY)
    mean = aggregate.cuped_cells(session, experiment.id, "revenue", 7 * 86400, proportion=False)
    prop = aggregate.cuped_cells(session, experiment.id, "revenue", 7 * 86400, proportion=True)
    assert set(mean) == set(ref) == set(prop)
    for cell, r in ref.items():
        expected = CovariateStats(int(r[0]), r[1], r[2], r[3], r[4], r[5])
        for field in ("sum_y", "sum_y2", "sum_x", "sum_x2", "sum_xy"):
            assert math.isclose(
                getattr(mean[cell], field), getattr(expected, field), rel_tol=1e-9, abs_tol=1e-6
            ), field
        assert mean[cell].n == prop[cell].n == int(r[0])
        assert prop[cell].sum_y == prop[cell].sum_y2 == r[6]
        assert math.isclose(prop[cell].sum_xy, r[7], rel_tol=1e-9, abs_tol=1e-6)
    return {"mean": mean, "prop": prop}


def test_cuped_sums_equal_brute_force_and_incremental_equals_rebuild(
    db_session: Session, rng: np.random.Generator
) -> None:
    experiment = make_experiment(
        db_session,
        metrics=METRICS,
        epochs=[(T0, {"control": 1, "treatment": 1}), (EPOCH1, {"control": 1, "treatment": 1})],
    )
    first = _batch(rng, "a", 200)
    write_events(db_session, experiment, first)
    _run(db_session, experiment)
    _check(db_session, experiment, first)
    # late pre-exposure outcomes of old units, new units, and old units exposed a day earlier
    # (their lookback moves: some purchases leave it, the exposure-day ones enter it)
    second = _batch(rng, "b", 100)
    for x in first.exposures[:30]:
        second.exposures.append({**x, "ts": x["ts"] - DAY})
        second.outcomes.append(
            {"unit_id": x["unit_id"], "name": "revenue", "value": 5.0, "ts": x["ts"] - 2 * HOUR}
        )
    write_events(db_session, experiment, second)
    _run(db_session, experiment)
    union = Events(first.exposures + second.exposures, [], first.outcomes + second.outcomes)
    incremental = _check(db_session, experiment, union)
    rows = rollup_rows(db_session, experiment)
    assert any(",-604800," in r for r in rows["analysis_unit_window"])  # the lookback rows
    clear_rollups(db_session, experiment.id)
    _run(db_session, experiment)
    assert rollup_rows(db_session, experiment) == rows
    assert _check(db_session, experiment, union) == incremental


def test_the_snapshot_shows_adjusted_and_raw_effects(
    db_session: Session, rng: np.random.Generator
) -> None:
    from abstats.analysis.service import run_analysis
    from abstats.engine.snapshot import SnapshotResult
    from abstats.engine.words import adjustment_note

    experiment = make_experiment(db_session, metrics=METRICS, policy={"ramp": None})
    write_events(db_session, experiment, _batch(rng, "a", 600, lift=0.1))
    run = run_analysis(db_session, experiment.key, wait_seconds=1, now=T0 + 10 * DAY)
    snap = SnapshotResult.model_validate(run.snapshot.result)
    revenue = next(m for m in snap.metrics if m.metric == "revenue")
    (c,) = revenue.comparisons
    assert c.adjustment is not None and c.adjustment.covariate == "pre_exposure"
    assert c.adjustment.variance_reduction > 0.2  # the spending level carries over
    raw_width = c.adjustment.raw_ci_upper - c.adjustment.raw_ci_lower  # type: ignore[operator]
    assert c.ci_upper - c.ci_lower < raw_width  # type: ignore[operator]
    assert c.adjustment.raw_relative_effect is not None
    assert "revenue/treatment/raw" in snap.sequential_state["comparisons"]  # type: ignore[operator]
    note = adjustment_note("revenue", c)
    assert note.startswith("revenue in treatment: adjusted +") and ", raw " in note
    # the per-variant values stay the raw ones
    assert revenue.variants["control"].units + revenue.variants["treatment"].units == 600
    bought = next(m for m in snap.metrics if m.metric == "bought")
    assert bought.comparisons[0].adjustment is not None


def test_a_covariate_is_validated() -> None:
    import pydantic
    import pytest

    base = {"key": "r", "kind": "mean", "outcome": "r", "covariate": "pre_exposure"}
    assert MetricSpec.model_validate(base).lookback_seconds == 14 * 86400
    assert MetricSpec.model_validate({**base, "covariate": None}).lookback_seconds is None
    for bad, needle in (
        ({**base, "covariate": "features"}, "pre_exposure"),
        ({**base, "lookback": "30m"}, "between 1h and 366d"),
        ({**base, "window": "7d"}, "cannot be combined"),
        ({"key": "l", "kind": "error_rate", "covariate": "pre_exposure"}, "proportion and mean"),
    ):
        with pytest.raises(pydantic.ValidationError, match=needle):
            MetricSpec.model_validate(bad)
