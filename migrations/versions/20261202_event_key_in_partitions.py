"""idempotency of timestamped events in the partitions: unique (experiment_id, message_id, ts)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 18:00:00+00:00

Issue 19: claiming every event's message id in ``event_message`` wrote each event twice (a heap
row and a random-order B-tree entry in a second table), which held ingest to about a third of raw
COPY speed. An event's identity is now ``(experiment_id, message_id, ts)`` when the client gave
its timestamp, enforced by a unique index on each event table. The index contains the partition
key ``ts``, so PostgreSQL can enforce it per partition (a partitioned unique index must contain
the partition key); a resend of the same event carries the same ``ts`` and so meets the earlier
row in the same partition. ``event_message`` keeps the claims of events whose timestamp the
server chose (their resends get another one) and of ``/assign``'s exposures (see
``abstats.ingest.repository``).

``message_id`` becomes ``COLLATE "C"``: ids are opaque byte strings, and the write path sorts each
batch in code-point order, which must be the index's order so that concurrent writers of
overlapping batches take the index's locks in one order (no deadlock). Equality, the only thing
anyone asks of a message id, is byte equality under any deterministic collation, so nothing else
changes; the columns have no index that the new collation would rebuild.

Existing rows are unique on ``(experiment_id, message_id)`` per table already (their claims), so
the new indexes cannot fail; building them locks the event tables against writes while they
are built (minutes for hundreds of millions of rows: plan a window). Existing claims stay: they
still make a timestamp-less resend of an old event a duplicate. The downgrade claims the events
stored since, as 0007 expects (one event per message id; a message id stored twice under two
timestamps keeps both rows, and its later resends are duplicates).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = {"exposure": "e", "prediction": "p", "outcome": "o"}


def upgrade() -> None:
    for table in TABLES:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN message_id TYPE text COLLATE "C"')
        op.execute(
            f"CREATE UNIQUE INDEX uq_{table}_experiment_id_message_id_ts "
            f"ON {table} (experiment_id, message_id, ts)"
        )


def downgrade() -> None:
    for table, kind in TABLES.items():
        # 0007 expects a claim for every event: add those of the events stored since
        op.execute(
            f"INSERT INTO event_message (experiment_id, kind, message_id) "
            f"SELECT experiment_id, '{kind}', message_id FROM {table} ON CONFLICT DO NOTHING"
        )
        op.execute(f"DROP INDEX uq_{table}_experiment_id_message_id_ts")
        op.execute(f'ALTER TABLE {table} ALTER COLUMN message_id TYPE text COLLATE "default"')
