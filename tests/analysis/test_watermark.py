"""The watermark never passes an id whose transaction may still commit (late commits with lower
ids are not missed), and an idle reader does not hold it back."""

from __future__ import annotations

from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from abstats.analysis.rollup import RollupPlan, lock_analysis, roll_up
from abstats.db.models import Prediction

from .conftest import T0, make_experiment


def _predictions(experiment_id: int, variant_id: int, prefix: str, n: int) -> list[dict]:  # type: ignore[type-arg]
    return [
        {
            "experiment_id": experiment_id,
            "variant_id": variant_id,
            "unit_id": f"{prefix}{i}",
            "ts": T0,
            "message_id": f"{prefix}{i}",
            "error": False,
        }
        for i in range(n)
    ]


def _requests(engine: Engine, experiment_id: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT coalesce(sum(requests), 0) FROM analysis_unit WHERE experiment_id = :e"
                ),
                {"e": experiment_id},
            ).scalar_one()
        )


def test_a_late_commit_with_lower_ids_is_not_missed(committed_engine: Engine) -> None:
    with Session(committed_engine) as session:
        experiment = make_experiment(session, metrics=[{"key": "e", "kind": "error_rate"}])
        session.commit()
        e, v = experiment.id, experiment.variants[0].id
    plan = RollupPlan()
    slow = committed_engine.connect()
    slow_tx = slow.begin()
    slow.execute(insert(Prediction), _predictions(e, v, "slow", 10))  # lower ids, uncommitted
    with Session(committed_engine) as fast:
        fast.execute(insert(Prediction), _predictions(e, v, "fast", 10))  # higher ids
        fast.commit()
    with Session(committed_engine) as session:
        lock_analysis(session, e)
        held = roll_up(session, e, plan, wait_seconds=0.3)
        session.commit()
    assert held.held_back_by and not held.advanced  # a naive max(id) would skip the slow rows
    slow_tx.commit()
    slow.close()
    with Session(committed_engine) as session:
        lock_analysis(session, e)
        moved = roll_up(session, e, plan, wait_seconds=1)
        session.commit()
    with committed_engine.connect() as conn:
        head = conn.execute(text("SELECT max(id) FROM prediction")).scalar_one()
    assert moved.current.prediction_id == head and not moved.held_back_by
    assert _requests(committed_engine, e) == 20  # the late rows with lower ids are counted


def test_an_idle_reader_does_not_hold_the_watermark(committed_engine: Engine) -> None:
    with Session(committed_engine) as session:
        experiment = make_experiment(session, metrics=[{"key": "e", "kind": "error_rate"}])
        session.execute(
            insert(Prediction), _predictions(experiment.id, experiment.variants[0].id, "u", 5)
        )
        session.commit()
        e = experiment.id
    reader = committed_engine.connect()
    reader_tx = reader.begin()
    reader.execute(text("SELECT count(*) FROM prediction")).scalar_one()  # idle in transaction
    try:
        with Session(committed_engine) as session:
            lock_analysis(session, e)
            result = roll_up(session, e, RollupPlan(), wait_seconds=0.3)
            session.commit()
        assert result.advanced and not result.held_back_by
        assert _requests(committed_engine, e) == 5
    finally:
        reader_tx.rollback()
        reader.close()
