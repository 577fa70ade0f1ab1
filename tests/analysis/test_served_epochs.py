"""Epochs are what was served (issue 13, item 1): after a ramp step the router serves the old
weights until it has applied the new ones. Units first exposed before the router confirmed the
step (plus a settle window) are left out of the SRM check, so a router lag is no mismatch."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy import update
from sqlalchemy.orm import Session

from abstats.analysis.service import run_analysis
from abstats.db.models import Decision, OutboxItem, WeightEpoch
from abstats.engine.snapshot import SnapshotResult

from .conftest import T0, Events, make_experiment, minutes, write_events

METRICS = [
    {
        "key": "conversion",
        "kind": "proportion",
        "outcome": "converted",
        "role": "primary",
        "direction": "increase",
    },
]
STEP = T0 + timedelta(hours=1)
LAG = timedelta(minutes=5)


def _lagged_ramp(session: Session, *, delivered_after: timedelta | None) -> SnapshotResult:
    """A 5% -> 25% step at STEP whose router serves the old split for LAG; the outbox call that
    applied the step was delivered ``delivered_after`` the step (None: still pending)."""
    experiment = make_experiment(
        session,
        metrics=METRICS,
        policy={"min_units_per_variant": 100},
        epochs=[(T0, {"control": 95.0, "treatment": 5.0}),
                (STEP, {"control": 75.0, "treatment": 25.0})],
    )  # fmt: skip
    decision = Decision(experiment_id=experiment.id, action="advance_ramp", actor="policy",
                        reason="step", weights_before={"control": 95.0, "treatment": 5.0},
                        weights_after={"control": 75.0, "treatment": 25.0})  # fmt: skip
    session.add(decision)
    session.flush()
    session.execute(
        update(WeightEpoch)
        .where(WeightEpoch.experiment_id == experiment.id, WeightEpoch.epoch == 1)
        .values(decision_id=decision.id)
    )
    session.add(
        OutboxItem(
            experiment_id=experiment.id,
            decision_id=decision.id,
            kind="router",
            payload={"weights": decision.weights_after},
            attempts=1,
            done_at=STEP + delivered_after if delivered_after is not None else None,
        )
    )
    rng = np.random.default_rng(4)
    events = Events()
    # 20,000 units an hour for two hours; the router switches LAG after the step
    for i in range(40_000):
        ts = T0 + minutes(120 * i / 40_000)
        share = 0.25 if ts >= STEP + LAG else 0.05
        variant = "treatment" if rng.random() < share else "control"
        events.exposures.append({"variant": variant, "unit_id": f"u{i}", "ts": ts})
    write_events(session, experiment, events)
    run = run_analysis(session, experiment.key, wait_seconds=1)
    return SnapshotResult.model_validate(run.snapshot.result)


def test_a_router_lag_at_a_ramp_step_is_no_sample_ratio_mismatch(db_session: Session) -> None:
    result = _lagged_ramp(db_session, delivered_after=LAG)
    assert result.srm is not None and not result.srm.flagged, result.srm
    # the lag's units (20,000/h x 5 min) and the settle window's are left out of the check
    assert 1600 < result.srm_excluded_units < 1800
    assert result.recommendation != "pause"


def test_the_same_lag_counted_against_the_new_weights_is_a_mismatch(db_session: Session) -> None:
    # the router call "confirmed" at once although the router went on serving the old split
    result = _lagged_ramp(db_session, delivered_after=timedelta(0))
    assert result.srm is not None and result.srm.flagged
    assert result.srm.p_value is not None and result.srm.p_value < 1e-4


def test_units_of_a_step_the_router_has_not_confirmed_are_not_judged(db_session: Session) -> None:
    result = _lagged_ramp(db_session, delivered_after=None)
    assert result.srm is not None and not result.srm.flagged
    assert result.srm_excluded_units > 10_000  # the whole unconfirmed epoch
