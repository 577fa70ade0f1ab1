"""partition the event tables by time; idempotency through event_message

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 21:20:00+00:00

``exposure``, ``prediction`` and ``outcome`` become ``PARTITION BY RANGE (ts)`` tables with monthly
partitions and a default one (see ``abstats.db.partitions``). Their primary key becomes
``(id, ts)``; the unique ``(experiment_id, message_id)`` moves to the unpartitioned
``event_message`` table, because a unique index of a partitioned table must contain ``ts``.

``event_message`` has no foreign key to ``experiment``: its check would be a trigger call per
event on the ingest hot path (measured: an eighth of the insert's time), and experiment ids are
never reused, so the claims of a deleted experiment can never collide with another's.

Existing rows are copied (in one transaction: plan a maintenance window for a large install).
Every other index and foreign key is read from the catalog and recreated as it was, so this
migration also carries indexes added by later revisions on a downgrade/upgrade round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = {"exposure": "e", "prediction": "p", "outcome": "o"}
MONTHS_BACK = 24  # older rows go to the default partition
MONTHS_AHEAD = 3


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _catalog(table: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[str]]:
    """(indexes (name, definition), foreign keys (name, definition), constraint-backed index
    names) of ``table`` as it is now."""
    bind = op.get_bind()
    indexes = [
        (r[0], r[1])
        for r in bind.execute(
            sa.text(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = current_schema() AND tablename = :t ORDER BY indexname"
            ),
            {"t": table},
        )
    ]
    fkeys = [
        (r[0], r[1])
        for r in bind.execute(
            sa.text(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = CAST(:t AS regclass) AND contype = 'f' ORDER BY conname"
            ),
            {"t": table},
        )
    ]
    backing = [
        r[0]
        for r in bind.execute(
            sa.text(
                "SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) "
                "AND contype IN ('p', 'u')"
            ),
            {"t": table},
        )
    ]
    return indexes, fkeys, backing


def _set_aside(table: str, indexes: list[tuple[str, str]]) -> str:
    """Rename ``table``, its indexes and its identity sequence out of the way; returns the new
    table name."""
    aside = f"{table}__old"
    bind = op.get_bind()
    sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table})
    seq = sequence.scalar()
    op.execute(f"ALTER TABLE {table} RENAME TO {aside}")
    for name, _ in indexes:
        op.execute(f"ALTER INDEX {name} RENAME TO {name}__old")
    if seq:
        op.execute(f"ALTER SEQUENCE {seq} RENAME TO {seq.split('.')[-1]}__old")
    return aside


def _move_rows(table: str, aside: str) -> None:
    op.execute(f"INSERT INTO {table} OVERRIDING SYSTEM VALUE SELECT * FROM {aside}")
    op.execute(
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
        f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
    )


def _restore(table: str, fkeys: list[tuple[str, str]], indexes: list[tuple[str, str]]) -> None:
    for name, definition in fkeys:
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
    for _, definition in indexes:
        op.execute(definition)


def upgrade() -> None:
    op.create_table(
        "event_message",
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=1), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "experiment_id", "kind", "message_id", name=op.f("pk_event_message")
        ),
    )
    bind = op.get_bind()
    this_month = date.today().replace(day=1)
    for table, kind in TABLES.items():
        indexes, fkeys, backing = _catalog(table)
        aside = _set_aside(table, indexes)
        op.execute(
            f"CREATE TABLE {table} (LIKE {aside} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE (ts)"
        )
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id, ts)")
        op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        oldest = bind.execute(sa.text(f"SELECT min(ts) FROM {aside}")).scalar()
        first = this_month
        if oldest is not None:
            oldest_month = oldest.astimezone(UTC).date().replace(day=1)
            first = max(min(oldest_month, this_month), _add_months(this_month, -MONTHS_BACK))
        month = first
        while month <= _add_months(this_month, MONTHS_AHEAD):
            following = _add_months(month, 1)
            op.execute(
                f"CREATE TABLE {table}_p{month.year:04d}_{month.month:02d} PARTITION OF {table} "
                f"FOR VALUES FROM ('{month.isoformat()} 00:00:00+00') "
                f"TO ('{following.isoformat()} 00:00:00+00')"
            )
            month = following
        _move_rows(table, aside)
        op.execute(
            f"INSERT INTO event_message (experiment_id, kind, message_id) "
            f"SELECT experiment_id, '{kind}', message_id FROM {aside}"
        )
        op.execute(f"DROP TABLE {aside}")
        _restore(table, fkeys, [(n, d) for n, d in indexes if n not in backing])


def downgrade() -> None:
    for table in TABLES:
        indexes, fkeys, backing = _catalog(table)
        aside = _set_aside(table, indexes)
        op.execute(
            f"CREATE TABLE {table} (LIKE {aside} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMMENTS)"
        )
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id)")
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT uq_{table}_experiment_id_message_id "
            "UNIQUE (experiment_id, message_id)"
        )
        _move_rows(table, aside)
        op.execute(f"DROP TABLE {aside} CASCADE")
        _restore(table, fkeys, [(n, d) for n, d in indexes if n not in backing])
    op.drop_table("event_message")


