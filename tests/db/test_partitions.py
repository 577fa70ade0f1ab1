"""Time partitioning of the event tables: rows land in their month, the default partition catches
the rest, partitions are made ahead idempotently, and the 0002 -> 0003 migration keeps every row
and the idempotency of what was stored before it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from abstats.db import migrate
from abstats.db.partitions import add_months, ensure_partitions, list_partitions, partition_name
from abstats.ingest import repository


def _experiment(conn_or_session: Session | object, key: str) -> tuple[int, int]:
    run = conn_or_session.execute  # type: ignore[attr-defined]
    experiment_id = run(
        text(
            "INSERT INTO experiment (key, name, description, status, control_variant, salt, "
            "metrics, policy, router, notifications, metadata) VALUES (:k, :k, '', 'running', "
            "'v1', 's', '[]', '{}', '{}', '{}', '{}') RETURNING id"
        ),
        {"k": key},
    ).scalar_one()
    variant_id = run(
        text(
            "INSERT INTO variant (experiment_id, key, position, model_version, metadata, retired) "
            "VALUES (:e, 'v1', 0, '', '{}', false) RETURNING id"
        ),
        {"e": experiment_id},
    ).scalar_one()
    return int(experiment_id), int(variant_id)


def _prediction(experiment_id: int, variant_id: int, ts: datetime, message_id: str) -> tuple:  # type: ignore[type-arg]
    return (
        experiment_id,
        variant_id,
        "u1",
        None,
        ts,
        0.5,
        1.0,
        None,
        10.0,
        False,
        None,
        message_id,
    )


def test_rows_land_in_their_month_and_old_ones_in_default(db_session: Session) -> None:
    experiment_id, variant_id = _experiment(db_session, "part-month")
    now = datetime.now(UTC)
    rows = [
        _prediction(experiment_id, variant_id, now, "now"),
        _prediction(experiment_id, variant_id, now - timedelta(days=3 * 365), "old"),
    ]
    assert repository.copy_insert(db_session, repository.PREDICTION, rows) == 2
    placed = dict(
        db_session.execute(
            text(
                "SELECT message_id, tableoid::regclass::text FROM prediction "
                "WHERE experiment_id = :e"
            ),
            {"e": experiment_id},
        ).all()
    )
    assert placed == {
        "now": partition_name("prediction", now.date().replace(day=1)),
        "old": "prediction_default",
    }
    # the same events again, in another partition's month or not, are duplicates
    assert repository.copy_insert(db_session, repository.PREDICTION, rows) == 0


def test_an_event_with_its_own_timestamp_is_keyed_by_message_id_and_timestamp(
    db_session: Session,
) -> None:
    experiment_id, variant_id = _experiment(db_session, "part-dup")
    now = datetime.now(UTC)
    old = now - timedelta(days=62)
    first = [_prediction(experiment_id, variant_id, ts, "m-1") for ts in (now, old)]
    in_batch = [_prediction(experiment_id, variant_id, now, "m-2")] * 3
    assert repository.copy_insert(db_session, repository.PREDICTION, first) == 2
    # the same events again (each in its own month's partition) are duplicates, also when sent
    # with new ones (the batch falls back from COPY to the staging table)
    again = [*reversed(first), _prediction(experiment_id, variant_id, old, "m-3")]
    assert repository.copy_insert(db_session, repository.PREDICTION, again) == 1
    assert repository.copy_insert(db_session, repository.PREDICTION, in_batch) == 1
    stored = db_session.execute(
        text("SELECT message_id, ts FROM prediction WHERE experiment_id = :e ORDER BY 1, 2"),
        {"e": experiment_id},
    ).all()
    assert [(m, ts) for m, ts in stored] == [("m-1", old), ("m-1", now), ("m-2", now), ("m-3", old)]
    claims = db_session.execute(
        text("SELECT count(*) FROM event_message WHERE experiment_id = :e"), {"e": experiment_id}
    ).scalar_one()
    assert claims == 0  # written once: no claim


def test_a_claimed_message_id_is_unique_per_experiment_whatever_its_timestamp(
    db_session: Session,
) -> None:
    experiment_id, variant_id = _experiment(db_session, "part-claim")
    now = datetime.now(UTC)
    first = [_prediction(experiment_id, variant_id, now, "m-1")]
    moved = [_prediction(experiment_id, variant_id, now - timedelta(days=62), "m-1")]
    in_batch = [_prediction(experiment_id, variant_id, now, "m-2")] * 3
    insert = repository.copy_insert
    assert insert(db_session, repository.PREDICTION, first, claim=True) == 1
    assert insert(db_session, repository.PREDICTION, moved, claim=True) == 0
    assert insert(db_session, repository.PREDICTION, in_batch, claim=True) == 1
    count = db_session.execute(
        text("SELECT count(*) FROM prediction WHERE experiment_id = :e"), {"e": experiment_id}
    ).scalar_one()
    assert count == 2
    # a claimed event resent with the same timestamp but without the claim is a duplicate too
    assert insert(db_session, repository.PREDICTION, first) == 0


def test_ensure_partitions_is_idempotent_and_leaves_occupied_months(db_session: Session) -> None:
    conn = db_session.connection()
    today = datetime.now(UTC).date()
    far = add_months(today.replace(day=1), 8)
    experiment_id, variant_id = _experiment(db_session, "part-ahead")
    stamp = datetime(far.year, far.month, 15, tzinfo=UTC)
    repository.copy_insert(
        db_session, repository.PREDICTION, [_prediction(experiment_id, variant_id, stamp, "f")]
    )

    report = ensure_partitions(conn, months_ahead=10)
    assert partition_name("prediction", far) in report.blocked
    assert partition_name("exposure", far) in report.created  # no exposure rows that month
    assert partition_name("prediction", add_months(far, 1)) in report.created
    again = ensure_partitions(conn, months_ahead=10)
    assert again.created == []
    assert set(again.blocked) == {partition_name("prediction", far)}
    names = {partition for _, partition, _ in list_partitions(conn)}
    assert {f"{t}_default" for t in ("exposure", "prediction", "outcome")} <= names
    where = db_session.execute(
        text("SELECT tableoid::regclass::text FROM prediction WHERE message_id = 'f'")
    ).scalar_one()
    assert where == "prediction_default"


@pytest.fixture
def scratch(engine: Engine) -> Iterator[Engine]:
    url = make_url(engine.url.render_as_string(hide_password=False))
    name = f"{url.database}_partmig"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    scratch = create_engine(url.set(database=name))
    yield scratch
    scratch.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def test_migration_to_partitions_keeps_rows_ids_and_idempotency(scratch: Engine) -> None:
    migrate.upgrade(scratch, "0002")
    now = datetime.now(UTC)
    stamps = [now - timedelta(days=40 * i) for i in range(5)] + [now - timedelta(days=4000)]
    with scratch.begin() as conn:
        experiment_id, variant_id = _experiment(conn, "before")
        for i, ts in enumerate(stamps):
            conn.execute(
                text(
                    "INSERT INTO prediction (experiment_id, variant_id, unit_id, ts, score, "
                    "message_id) VALUES (:e, :v, 'u', :ts, 0.1, :m)"
                ),
                {"e": experiment_id, "v": variant_id, "ts": ts, "m": f"m-{i}"},
            )
            conn.execute(
                text(
                    "INSERT INTO outcome (experiment_id, unit_id, name, value, ts, message_id) "
                    "VALUES (:e, 'u', 'label', 1, :ts, :m)"
                ),
                {"e": experiment_id, "ts": ts, "m": f"o-{i}"},
            )
        before = conn.execute(text("SELECT id, ts, message_id FROM prediction ORDER BY id")).all()

    migrate.upgrade(scratch)
    assert migrate.at_head(scratch)
    with Session(scratch) as session:
        after = session.execute(text("SELECT id, ts, message_id FROM prediction ORDER BY id")).all()
        assert after == before
        claims = session.execute(
            text("SELECT kind, count(*) FROM event_message GROUP BY kind ORDER BY kind")
        ).all()
        assert claims == [("o", len(stamps)), ("p", len(stamps))]
        months = session.execute(
            text("SELECT count(DISTINCT tableoid) FROM prediction")
        ).scalar_one()
        assert months == 6  # five recent months and the default partition (for 4000 days ago)
        resent = [_prediction(experiment_id, variant_id, stamps[i], f"m-{i}") for i in range(5)]
        assert repository.copy_insert(session, repository.PREDICTION, resent) == 0
        # their claims still hold for a resend whose timestamp the server chooses
        later = [_prediction(experiment_id, variant_id, now, f"m-{i}") for i in range(5)]
        assert repository.copy_insert(session, repository.PREDICTION, later, claim=True) == 0
        fresh = [_prediction(experiment_id, variant_id, now, "new")]
        assert repository.copy_insert(session, repository.PREDICTION, fresh) == 1
        new_id = session.execute(
            text("SELECT id FROM prediction WHERE message_id = 'new'")
        ).scalar_one()
        assert new_id > max(row.id for row in before)  # the identity carried on
        session.commit()

    migrate.downgrade(scratch, "0002")
    with scratch.connect() as conn:
        back = conn.execute(text("SELECT id, ts, message_id FROM prediction ORDER BY id")).all()
        assert [tuple(r) for r in back[: len(before)]] == [tuple(r) for r in before]
        assert len(back) == len(before) + 1
        unique = conn.execute(
            text(
                "SELECT count(*) FROM pg_constraint WHERE conname = "
                "'uq_prediction_experiment_id_message_id'"
            )
        ).scalar_one()
        assert unique == 1


def test_month_arithmetic() -> None:
    assert add_months(date(2026, 11, 1), 3) == date(2027, 2, 1)
    assert add_months(date(2026, 1, 1), -1) == date(2025, 12, 1)
    assert partition_name("outcome", date(2027, 2, 1)) == "outcome_p2027_02"
