"""New units per time bucket: buckets that fit the run's length (a 40-second run is not one bar
per day), counted from the analysis rollup on the real database, with empty buckets kept."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from abstats.db.models import AnalysisUnit
from abstats.experiments import repository
from abstats.reports import charts
from abstats.reports.service import new_units
from tests.control.conftest import make_experiment


def test_bucket_fits_the_run() -> None:
    assert charts.time_bucket(40) == (5, "5 seconds")
    assert charts.time_bucket(20) == (1, "second")
    assert charts.time_bucket(3 * 3600) == (900, "15 minutes")
    assert charts.time_bucket(5 * 86400) == (6 * 3600, "6 hours")
    assert charts.time_bucket(30 * 86400) == (86400, "day")
    assert charts.time_bucket(400 * 86400) == (7 * 86400, "week")


def _units(session: Session, offsets: list[float], start: datetime) -> None:
    experiment = make_experiment(session)
    ids = repository.variant_ids(session, experiment.id)
    for i, seconds in enumerate(offsets):
        moment = start + timedelta(seconds=seconds)
        session.add(
            AnalysisUnit(
                experiment_id=experiment.id,
                unit_id=f"u{i}",
                variant_id=ids["v1" if i % 2 else "v2"],
                first_ts=moment,
                last_ts=moment,
                has_exposure=True,
                mixed=False,
                requests=1,
                errors=0,
                latency_n=0,
                latency_sum=0,
            )
        )
    session.flush()


def test_a_40_second_run_gets_5_second_bars(db_session: Session) -> None:
    start = datetime(2026, 11, 20, 11, 38, 0, tzinfo=UTC)
    # units in the first 10 s and the last 10 s of a 40 s run: the buckets between are empty
    _units(db_session, [0, 1, 2, 3, 6, 7, 31, 32, 38, 39.5], start)
    rows = new_units(db_session, repository.get_experiment(db_session, "churn").id)
    labels = sorted({label for label, _, _ in rows})
    assert labels[0] == "2026-11-20T11:38:00" and labels[-1] == "2026-11-20T11:38:35"
    assert len(labels) == 8  # 0, 5, ..., 35: every bucket, empty ones included
    assert sum(n for _, _, n in rows) == 10
    assert dict(((label, v), n) for label, v, n in rows)[("2026-11-20T11:38:15", "v1")] == 0
    svg = charts.daily_bars(rows, ["v1", "v2"])
    assert "New units exposed per 5 seconds" in svg and "new units per 5 seconds" in svg
    assert ">11:38:00</text>" in svg
    assert len(re.findall(r"<rect ", svg)) == 16


def test_a_month_gets_days(db_session: Session) -> None:
    start = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
    _units(db_session, [0, 3600, 86400 * 29], start)
    rows = new_units(db_session, repository.get_experiment(db_session, "churn").id)
    labels = sorted({label for label, _, _ in rows})
    assert labels[0] == "2026-10-01" and labels[-1] == "2026-10-30" and len(labels) == 30
    assert charts.bucket_of(rows) == (86400, "day")
