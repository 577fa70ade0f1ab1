"""The raw COPY write path tells "the database is gone" (503, retry) from "this data is wrong"
(a bug to surface), on a real server: a backend terminated under the session, and a row COPY
refuses."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg2
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from abstats.errors import DatabaseUnavailable
from abstats.ingest.repository import EXPOSURE, copy_insert


@pytest.fixture
def own_engine(database_url: str) -> Iterator[Engine]:
    from abstats.db.engine import make_engine

    engine = make_engine(database_url, pool_size=1)
    yield engine
    engine.dispose()


def _row(experiment_id: object = 1) -> tuple[object, ...]:
    return (experiment_id, 1, "u1", datetime.now(UTC), "m1", "api")


def test_a_connection_killed_under_the_write_is_a_retryable_503(
    own_engine: Engine, engine: Engine
) -> None:
    with Session(own_engine) as session:
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as admin:
            assert admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        with pytest.raises(DatabaseUnavailable, match="retry later"):
            copy_insert(session, EXPOSURE, [_row()])


def test_data_the_server_refuses_is_not_reported_as_an_outage(own_engine: Engine) -> None:
    with Session(own_engine) as session:
        with pytest.raises(psycopg2.errors.InvalidTextRepresentation):
            copy_insert(session, EXPOSURE, [_row("not-an-integer")])
        session.rollback()
        assert session.execute(text("SELECT 1")).scalar_one() == 1  # the connection is fine
