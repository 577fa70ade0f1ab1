"""A Thompson bandit on a mean metric reweights through the real pipeline: events in PostgreSQL
-> rollups -> snapshot (every per-variant value with its standard error) -> the rule table ->
a decision and a new weight epoch. Before the snapshot carried standard errors for every kind, a
bandit on a mean metric never reweighted (its arms had no interval to rebuild a posterior from)."""

from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session

from abstats.analysis.service import run_analysis
from abstats.control.service import evaluate_snapshot
from abstats.engine.snapshot import SnapshotResult
from abstats.experiments import repository

from .conftest import T0, Events, make_experiment, minutes, write_events

METRICS = [
    {
        "key": "revenue",
        "kind": "mean",
        "outcome": "revenue",
        "role": "primary",
        "direction": "increase",
    },
]
POLICY = {
    "ramp": None,
    "bandit": {"algorithm": "thompson", "floor": 10, "metric": "revenue"},
    "min_units_per_variant": 100,
    "min_events_per_variant": 10,
    "min_runtime": "10m",
}


def test_a_bandit_on_a_mean_metric_reweights(db_session: Session) -> None:
    rng = np.random.default_rng(3)
    experiment = make_experiment(db_session, metrics=METRICS, policy=POLICY)
    events = Events()
    for i in range(2000):
        variant = ("control", "treatment")[i % 2]
        unit, ts = f"u{i}", T0 + minutes(60 * i / 2000)
        events.exposures.append({"variant": variant, "unit_id": unit, "ts": ts})
        mean = 10.0 if variant == "control" else 10.3  # +3%
        events.outcomes.append(
            {"unit_id": unit, "name": "revenue", "value": float(rng.normal(mean, 3.0)), "ts": ts}
        )
    write_events(db_session, experiment, events)
    run = run_analysis(db_session, experiment.key, wait_seconds=1)
    result = SnapshotResult.model_validate(run.snapshot.result)
    revenue = result.metrics[0].variants
    assert all(v.std_error is not None and v.std_error > 0 for v in revenue.values())
    # the recommendation already says what the decision will do
    assert result.recommendation == "reweight", result.reason

    outcome = evaluate_snapshot(db_session, experiment, run.snapshot)
    assert [d.action for d in outcome.decisions] == ["reweight"]
    weights = repository.current_epoch(db_session, experiment.id).weights  # type: ignore[union-attr]
    share = 100 * weights["treatment"] / sum(weights.values())
    assert share > 80, weights  # +3% with 1,000 units each: nearly sure to be best
    assert min(100 * w / sum(weights.values()) for w in weights.values()) >= 10 - 1e-9  # floor
