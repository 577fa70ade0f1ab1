"""Cell sums (analysis_cell) kept by delta: a weight epoch opened after a fold, a rewritten epoch
history and winsorisation caps read from the top of an index all give exactly what a rebuild and
a full scan over every unit give, and what a brute-force Python computation gives."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from abstats.analysis import aggregate
from abstats.analysis.rollup import (
    RollupPlan,
    clear_rollups,
    ensure_cell_epochs,
    lock_analysis,
    roll_up,
)
from abstats.db.models import Experiment, WeightEpoch
from abstats.engine.specs import MetricSpec

from .conftest import T0, Events, make_experiment, minutes, write_events
from .test_rollup import (
    EPOCH1,
    METRICS,
    assert_ratio,
    brute_force,
    generate,
    rollup_rows,
    run_rollup,
    sql_state,
)

PLAN = RollupPlan.from_metrics([MetricSpec.model_validate(m) for m in METRICS])


def _assert_matches_brute_force(session: Session, experiment: Experiment, events: Events) -> None:
    ref = brute_force(experiment, events)  # stratified by [T0, EPOCH1]
    got = sql_state(session, experiment)
    assert {c[1] for c in ref["cells"]} == {0, 1}
    assert set(got["units"]) == set(ref["cells"])
    for c, r in ref["cells"].items():
        assert (got["units"][c].units, got["units"][c].mixed) == (r["units"], r["mixed"])
        assert_ratio(got["units"][c].errors, r["errors"])
        assert_ratio(got["ctr"][c][0], r["ctr"])
        assert got["latency"][c].counts == r["latency_hist"].counts
        conv = got["conversion"][c].proportion
        assert (conv.n, conv.successes) == r["conversion"]


def _rebuilt(session: Session, experiment: Experiment) -> tuple[dict[str, Any], dict[str, Any]]:
    clear_rollups(session, experiment.id)
    run_rollup(session, experiment)
    return rollup_rows(session, experiment), sql_state(session, experiment)


def _open_epoch(session: Session, experiment: Experiment, number: int, start: Any) -> None:
    session.add(
        WeightEpoch(
            experiment_id=experiment.id,
            epoch=number,
            weights={"control": 1, "treatment": 4},
            started_at=start,
        )
    )
    session.flush()


def test_an_epoch_opened_after_a_fold_moves_only_later_units(
    db_session: Session, rng: np.random.Generator
) -> None:
    experiment = make_experiment(
        db_session, metrics=METRICS, epochs=[(T0, {"control": 1, "treatment": 1})]
    )
    events = generate(rng, 300, "a", 0)
    write_events(db_session, experiment, events)
    run_rollup(db_session, experiment)
    assert {c[1] for c in aggregate.unit_cells(db_session, experiment.id)} == {0}
    _open_epoch(db_session, experiment, 1, EPOCH1)
    lock_analysis(db_session, experiment.id)
    moved = roll_up(db_session, experiment.id, PLAN, wait_seconds=1)
    later = {
        e["unit_id"] for e in events.exposures + events.predictions if e["ts"] >= EPOCH1
    }  # a superset of the units first seen from EPOCH1 on
    assert 0 < moved.rows_read["touched"] <= len(later)
    assert "units" not in moved.rows_read  # no event was read again
    _assert_matches_brute_force(db_session, experiment, events)
    rows, state = rollup_rows(db_session, experiment), sql_state(db_session, experiment)
    assert _rebuilt(db_session, experiment) == (rows, state)


def test_a_rewritten_epoch_history_re_sums_the_cells(
    db_session: Session, rng: np.random.Generator
) -> None:
    experiment = make_experiment(
        db_session,
        metrics=METRICS,
        epochs=[(T0, {"control": 1, "treatment": 1}), (EPOCH1 + minutes(30), {"control": 1})],
    )
    events = generate(rng, 300, "a", 0)
    write_events(db_session, experiment, events)
    run_rollup(db_session, experiment)
    db_session.execute(
        text("UPDATE weight_epoch SET started_at = :s WHERE experiment_id = :e AND epoch = 1"),
        {"s": EPOCH1, "e": experiment.id},
    )
    run_rollup(db_session, experiment)
    _assert_matches_brute_force(db_session, experiment, events)
    rows, state = rollup_rows(db_session, experiment), sql_state(db_session, experiment)
    assert _rebuilt(db_session, experiment) == (rows, state)


def test_cells_follow_an_epoch_committed_after_the_fold(
    db_session: Session, rng: np.random.Generator
) -> None:
    experiment = make_experiment(
        db_session, metrics=METRICS, epochs=[(T0, {"control": 1, "treatment": 1})]
    )
    events = generate(rng, 200, "a", 0)
    write_events(db_session, experiment, events)
    run_rollup(db_session, experiment)
    _open_epoch(db_session, experiment, 1, EPOCH1)
    ensure_cell_epochs(db_session, experiment.id, PLAN, (T0, EPOCH1))
    _assert_matches_brute_force(db_session, experiment, events)


# --- winsorisation ----------------------------------------------------------------------------

WINSOR_METRICS = [
    {"key": "revenue", "kind": "mean", "outcome": "revenue", "winsorize": 0.9},
    {"key": "rpv", "kind": "ratio", "numerator": "revenue", "denominator": "views"},
]


def _revenue_events(rng: np.random.Generator, units: int, refunds: float) -> Events:
    """Units with and without revenue (some of it negative: refunds), views, and a few units
    that have outcomes but were never exposed (they must not count)."""
    ev = Events()
    for i in range(units):
        unit = f"w{i}"
        variant = "control" if rng.random() < 0.5 else "treatment"
        ts = T0 + minutes(float(rng.uniform(0, 100)))
        ev.exposures.append({"variant": variant, "unit_id": unit, "ts": ts})
        for _ in range(int(rng.poisson(0.8))):
            value = float(rng.exponential(20))
            if rng.random() < refunds:
                value = -value
            ev.outcomes.append({"unit_id": unit, "name": "revenue", "value": value, "ts": ts})
        if rng.random() < 0.7:
            views = float(rng.integers(1, 5))
            ev.outcomes.append({"unit_id": unit, "name": "views", "value": views, "ts": ts})
    for i in range(5):  # outcome-only units: the largest revenue of all, never exposed
        ev.outcomes.append({"unit_id": f"ghost{i}", "name": "revenue", "value": 1e6, "ts": T0})
    return ev


def _percentile_cont(values: list[float], q: float) -> float:
    """PostgreSQL's percentile_cont: linear between the two neighbouring ranks."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@pytest.mark.parametrize("refunds", [0.0, 0.4])
def test_winsorised_sums_from_the_index_equal_a_full_scan(
    db_session: Session, rng: np.random.Generator, refunds: float
) -> None:
    experiment = make_experiment(db_session, metrics=WINSOR_METRICS)
    events = _revenue_events(rng, 400, refunds)
    write_events(db_session, experiment, events)
    plan = RollupPlan.from_metrics([MetricSpec.model_validate(m) for m in WINSOR_METRICS])
    lock_analysis(db_session, experiment.id)
    roll_up(db_session, experiment.id, plan, wait_seconds=1)

    exposed = {x["unit_id"] for x in events.exposures}
    revenue: dict[str, float] = defaultdict(float)
    views: dict[str, float] = defaultdict(float)
    for o in events.outcomes:
        if o["unit_id"] in exposed:
            (revenue if o["name"] == "revenue" else views)[o["unit_id"]] += o["value"]
    per_unit = [revenue.get(u, 0.0) for u in sorted(exposed)]
    e = experiment.id
    for q in (0.01, 0.3, 0.5, 0.9, 0.99, 0.999):
        cap = aggregate.winsorize_cap(db_session, e, "revenue", q)
        assert cap == aggregate._winsorize_cap_scan(db_session, e, "revenue", q)  # same bits
        assert cap == pytest.approx(_percentile_cont(per_unit, q), rel=1e-12, abs=1e-12)
        assert cap is not None
        fast = aggregate.outcome_cells(db_session, e, "revenue", cap=cap)
        assert fast == aggregate._outcome_cells_scan(db_session, e, "revenue", cap)
        capped = [min(v, cap) for v in per_unit]
        total = sum(c.mean.sum for c in fast.values())
        assert total == pytest.approx(sum(capped), rel=1e-9, abs=1e-6)
        squares = sum(c.mean.sum_squares for c in fast.values())
        assert squares == pytest.approx(sum(v * v for v in capped), rel=1e-9)
        ratio = aggregate.ratio_cells(db_session, e, "revenue", "views", cap=cap)
        assert ratio == aggregate._ratio_cells_scan(db_session, e, "revenue", "views", cap)
        cross = sum(r.cross_sum for r, _ in ratio.values())
        expected = sum(min(revenue.get(u, 0.0), cap) * views.get(u, 0.0) for u in exposed)
        assert cross == pytest.approx(expected, rel=1e-9, abs=1e-6)
    if refunds:
        assert aggregate.winsorize_cap(db_session, e, "revenue", 0.01) < 0  # scan path taken


def test_outcomes_that_all_arrive_after_the_predictions(
    db_session: Session, rng: np.random.Generator
) -> None:
    """The first fold of outcomes and labels (plain inserts) joins earlier predictions."""
    experiment = make_experiment(
        db_session,
        metrics=METRICS,
        epochs=[(T0, {"control": 1, "treatment": 1}), (EPOCH1, {"control": 1, "treatment": 4})],
    )
    events = generate(rng, 300, "a", 0)
    write_events(db_session, experiment, Events(events.exposures, events.predictions, []))
    run_rollup(db_session, experiment)
    assert not aggregate.classification_cells(db_session, experiment.id, "label", 0.5)
    write_events(db_session, experiment, Events([], [], events.outcomes))
    run_rollup(db_session, experiment)
    _assert_matches_brute_force(db_session, experiment, events)
    ref = brute_force(experiment, events)
    got = aggregate.classification_cells(db_session, experiment.id, "label", 0.5)
    for c, r in ref["cells"].items():
        assert got[c][0].sums == r["confusion"][0.5].sums
        assert_ratio(got[c][1], r["log_loss"])
    rows, state = rollup_rows(db_session, experiment), sql_state(db_session, experiment)
    assert _rebuilt(db_session, experiment) == (rows, state)
