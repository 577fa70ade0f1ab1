"""The decision step against the real database: decision + weight epoch + outbox together,
exactly once per snapshot; recommend mode records without applying."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from abstats.control import service
from abstats.db.models import Decision, OutboxItem, WeightEpoch
from abstats.experiments import repository
from tests.control.conftest import add_snapshot, make_experiment
from tests.control.snapshots import comparison, good_guardrail, primary, snapshot


def _count(session: Session, model: type, experiment_id: int) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(model).where(model.experiment_id == experiment_id)
        )
        or 0
    )


def test_start_puts_the_candidate_at_the_first_ramp_step(db_session: Session) -> None:
    experiment = make_experiment(
        db_session, notifications={"webhook_url": "http://127.0.0.1:9/hook"}
    )
    decision = service.start(db_session, "churn", actor="key:abc")
    assert decision.action == "start" and decision.actor == "key:abc"
    assert decision.status_before == "draft" and decision.status_after == "running"
    assert decision.weights_before == {"v1": 1.0, "v2": 1.0}
    assert decision.weights_after == {"v1": 95.0, "v2": 5.0}
    epoch = repository.current_epoch(db_session, experiment.id)
    assert epoch is not None and epoch.epoch == 1 and epoch.decision_id == decision.id
    kinds = sorted(
        db_session.scalars(select(OutboxItem.kind).where(OutboxItem.decision_id == decision.id))
    )
    assert kinds == ["notify", "router"]


def test_decision_step_promotes_once_per_snapshot(db_session: Session) -> None:
    experiment = make_experiment(db_session, policy={"ramp": None})
    service.start(db_session, "churn", actor="key:abc")
    epoch = repository.current_epoch(db_session, experiment.id)
    assert epoch is not None
    result = snapshot(
        [
            primary(comparison(effect=0.041, lo=0.012, hi=0.07, p=0.003, better=True)),
            good_guardrail(),
        ],
        weight_epoch=epoch.epoch,
        weights={"v1": 1.0, "v2": 1.0},
    )
    row = add_snapshot(db_session, experiment, result)
    decisions = service.evaluate_snapshot(db_session, experiment, row).decisions
    assert [d.action for d in decisions] == ["promote"]
    d = decisions[0]
    assert d.actor == "policy" and d.applied and d.snapshot_id == row.id
    assert d.weights_after == {"v1": 0.0, "v2": 100.0}
    assert d.reason.startswith(
        "promote v2: v2 conversion +4.1% [+1.2%, +7.0%], always-valid p=0.003 < 0.05"
    )
    assert d.evidence["snapshot_id"] == row.id
    db_session.refresh(experiment)
    assert experiment.status == "concluded" and experiment.winner_variant == "v2"
    assert {v.key: v.retired for v in experiment.variants} == {"v1": True, "v2": False}
    epochs_before = _count(db_session, WeightEpoch, experiment.id)
    # the same snapshot again: nothing
    assert service.evaluate_snapshot(db_session, experiment, row).decisions == []
    assert _count(db_session, WeightEpoch, experiment.id) == epochs_before
    assert _count(db_session, Decision, experiment.id) == 2  # start + promote


def test_recommend_mode_records_without_applying(db_session: Session) -> None:
    experiment = make_experiment(db_session, policy={"ramp": None, "mode": "recommend"})
    service.start(db_session, "churn", actor="key:abc")
    breach = primary(comparison(effect=-0.05, lo=-0.08, hi=-0.02, p=0.001, worse=True))
    first = add_snapshot(db_session, experiment, snapshot([breach], weight_epoch=0))
    [decision] = service.evaluate_snapshot(db_session, experiment, first).decisions
    assert decision.action == "rollback" and not decision.applied
    db_session.refresh(experiment)
    assert experiment.status == "running"
    assert repository.current_epoch(db_session, experiment.id).weights == {"v1": 1.0, "v2": 1.0}  # type: ignore[union-attr]
    routers = db_session.scalars(
        select(OutboxItem).where(OutboxItem.decision_id == decision.id, OutboxItem.kind == "router")
    )
    assert list(routers) == []
    later = snapshot([breach], weight_epoch=0, cutoff=datetime.now(UTC) + timedelta(minutes=5))
    second = add_snapshot(db_session, experiment, later)
    assert (
        service.evaluate_snapshot(db_session, experiment, second).decisions == []
    )  # same recommendation


def test_mode_off_records_nothing(db_session: Session) -> None:
    experiment = make_experiment(db_session, policy={"ramp": None, "mode": "off"})
    service.start(db_session, "churn", actor="key:abc")
    row = add_snapshot(
        db_session,
        experiment,
        snapshot([primary(comparison(effect=-0.05, worse=True, p=0.001))], weight_epoch=0),
    )
    assert service.evaluate_snapshot(db_session, experiment, row).decisions == []


def test_policy_pause_sends_the_control_to_the_router(db_session: Session) -> None:
    experiment = make_experiment(db_session, policy={"ramp": None})
    service.start(db_session, "churn", actor="key:abc")
    row = add_snapshot(
        db_session, experiment, snapshot([primary()], srm_flagged=True, weight_epoch=0)
    )
    [decision] = service.evaluate_snapshot(db_session, experiment, row).decisions
    assert decision.action == "pause" and decision.status_after == "paused"
    item = db_session.scalars(select(OutboxItem).where(OutboxItem.decision_id == decision.id)).one()
    assert item.kind == "router" and item.payload["weights"] == {"v1": 100.0, "v2": 0.0}
