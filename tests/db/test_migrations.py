"""Migrations: the schema built by Alembic equals the ORM models, and down/up round-trips."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from abstats.db import migrate
from abstats.db.base import Base
from abstats.db.partitions import is_partition


def _context(conn: Connection) -> MigrationContext:
    """Compare like ``migrations/env.py`` does: the monthly partitions are not modelled."""

    def include(obj: object, name: str | None, type_: str, *_: object) -> bool:
        return not (type_ == "table" and name is not None and is_partition(name))

    return MigrationContext.configure(conn, opts={"include_object": include})


def test_schema_at_head_matches_models(engine: Engine) -> None:
    assert migrate.at_head(engine)
    with engine.connect() as conn:
        diff = compare_metadata(_context(conn), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"


def test_idempotency_key_exists(engine: Engine) -> None:
    primary = inspect(engine).get_pk_constraint("event_message")
    assert primary["constrained_columns"] == ["experiment_id", "kind", "message_id"]


def _scratch_engine(engine: Engine, suffix: str) -> tuple[Engine, Engine, str]:
    url = make_url(engine.url.render_as_string(hide_password=False))
    name = f"{url.database}_{suffix}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return admin, create_engine(url.set(database=name)), name


def _drop(admin: Engine, scratch: Engine, name: str) -> None:
    scratch.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def test_downgrade_base_then_upgrade_head_round_trips(engine: Engine) -> None:
    admin, scratch, name = _scratch_engine(engine, "roundtrip")
    try:
        migrate.upgrade(scratch)
        assert migrate.at_head(scratch)
        migrate.downgrade(scratch, "base")
        assert migrate.current_revision(scratch) is None
        assert set(inspect(scratch).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(scratch)
        assert migrate.at_head(scratch)
        with scratch.connect() as conn:
            diff = compare_metadata(_context(conn), Base.metadata)
        assert diff == []
    finally:
        _drop(admin, scratch, name)


def test_two_processes_upgrading_at_once_both_succeed(engine: Engine) -> None:
    admin, scratch, name = _scratch_engine(engine, "concurrent")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate.upgrade(scratch)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert migrate.at_head(scratch)
        migrate.upgrade(scratch)  # idempotent
        assert migrate.at_head(scratch)
    finally:
        _drop(admin, scratch, name)
