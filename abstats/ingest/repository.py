"""The bulk write path: COPY rows into a per-connection temporary staging table, then one
statement that claims the batch's message ids and inserts the events whose claim is new::

    WITH fresh AS (INSERT INTO event_message ... ON CONFLICT DO NOTHING RETURNING ...)
    INSERT INTO prediction ... SELECT ... FROM staging JOIN fresh USING (experiment_id, message_id)

- Idempotency is the primary key of ``event_message`` on ``(experiment_id, kind, message_id)``
  (the event tables are partitioned by time, so they cannot hold that unique key themselves; see
  ``abstats.db.partitions``): a resent event, or the same event in two concurrent requests, is
  inserted once; the insert's row count tells how many were new, the rest are duplicates. A
  concurrent claim of the same key waits for the other transaction and then skips the row.
- Claims are made in ``(experiment_id, message_id)`` order, so two transactions inserting
  overlapping batches take the unique-index locks in the same order and cannot deadlock.
- The staging table is ``ON COMMIT DELETE ROWS`` and is also emptied after each use, so a
  connection can stage several batches in one transaction.
- Everything runs in the caller's transaction (the request's); nothing commits here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg2
from sqlalchemy.orm import Session

from abstats.errors import DatabaseUnavailable


@dataclass(frozen=True)
class EventTable:
    name: str
    kind: str  # event_message.kind
    staging: str
    columns: tuple[str, ...]
    staging_ddl: str


EXPOSURE = EventTable(
    name="exposure",
    kind="e",
    staging="abstats_stage_exposure",
    columns=("experiment_id", "variant_id", "unit_id", "ts", "message_id", "source"),
    staging_ddl=(
        "experiment_id integer, variant_id integer, unit_id text, ts timestamptz, "
        "message_id text, source varchar(16)"
    ),
)
PREDICTION = EventTable(
    name="prediction",
    kind="p",
    staging="abstats_stage_prediction",
    columns=(
        "experiment_id",
        "variant_id",
        "unit_id",
        "request_id",
        "ts",
        "score",
        "label",
        "value",
        "latency_ms",
        "error",
        "features",
        "message_id",
    ),
    staging_ddl=(
        "experiment_id integer, variant_id integer, unit_id text, request_id text, "
        "ts timestamptz, score float8, label float8, value float8, latency_ms float8, "
        "error boolean, features jsonb, message_id text"
    ),
)
OUTCOME = EventTable(
    name="outcome",
    kind="o",
    staging="abstats_stage_outcome",
    columns=("experiment_id", "unit_id", "request_id", "name", "value", "ts", "message_id"),
    staging_ddl=(
        "experiment_id integer, unit_id text, request_id text, name varchar(64), "
        "value float8, ts timestamptz, message_id text"
    ),
)


def _csv_text(rows: Sequence[tuple[Any, ...]]) -> str:
    """Rows as COPY CSV. ``None`` becomes an unquoted empty field, which COPY reads as NULL;
    validation guarantees no text value is the empty string, so the two cannot be confused."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _first_of_each_message(
    table: EventTable, rows: Sequence[tuple[Any, ...]]
) -> Sequence[tuple[Any, ...]]:
    """Drop repeats of a message id within the batch (the first wins; the others count as
    duplicates), so that the claim and the insert below meet each message once."""
    exp = table.columns.index("experiment_id")
    msg = table.columns.index("message_id")
    seen: set[tuple[Any, Any]] = set()
    unique = []
    for row in rows:
        key = (row[exp], row[msg])
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique if len(unique) < len(rows) else rows


def copy_insert(session: Session, table: EventTable, rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert ``rows`` (in ``table.columns`` order) skipping existing message ids; returns how many
    were new."""
    if not rows:
        return 0
    rows = _first_of_each_message(table, rows)
    if "features" in table.columns:
        at = table.columns.index("features")
        rows = [
            (*r[:at], None if r[at] is None else orjson.dumps(r[at]).decode(), *r[at + 1 :])
            for r in rows
        ]
    data = _csv_text(rows)
    columns = ", ".join(table.columns)
    raw = session.connection().connection
    cur: Any = raw.cursor()
    try:
        with cur:
            cur.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {table.staging} ({table.staging_ddl}) "
                "ON COMMIT DELETE ROWS"
            )
            cur.copy_expert(
                f"COPY {table.staging} ({columns}) FROM STDIN WITH (FORMAT csv)",
                io.StringIO(data),
                size=1 << 18,
            )
            cur.execute(
                "WITH fresh AS ("
                " INSERT INTO event_message (experiment_id, kind, message_id)"
                f" SELECT experiment_id, '{table.kind}', message_id FROM {table.staging}"
                " ORDER BY experiment_id, message_id"
                " ON CONFLICT DO NOTHING RETURNING experiment_id, message_id) "
                f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {table.staging} "
                "WHERE (experiment_id, message_id) IN (SELECT experiment_id, message_id FROM fresh)"
            )
            inserted: int = cur.rowcount
            cur.execute(f"DELETE FROM {table.staging}")
    except psycopg2.Error as exc:
        # Raw DB-API errors bypass SQLAlchemy's wrapping: map "the server is gone" (and
        # serialization/deadlock failures, which are OperationalErrors too) to a retryable 503.
        # A server that dies during COPY can surface as a bare DatabaseError ("server closed the
        # connection unexpectedly", seen twice in the outage test) while ``raw.closed`` is still
        # 0: SQLAlchemy's dialect recognises those messages, and the error carries no SQLSTATE.
        disconnected = bool(raw.closed) or session.get_bind().dialect.is_disconnect(exc, raw, cur)
        if not (
            disconnected
            or isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
            # an error the server did not report (no SQLSTATE) is the connection's, not the data's
            or exc.pgcode is None
        ):
            raise
        if disconnected:
            # Tell SQLAlchemy, so the rollback that follows is a no-op rather than a second
            # error on a dead socket, and the pool drops the connection.
            session.connection().invalidate(exc)
        raise DatabaseUnavailable(
            "The database is unreachable or the write could not complete; retry later "
            "(resending the same message_ids is safe)."
        ) from exc
    return inserted
