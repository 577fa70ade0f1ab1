"""The bulk write path. An event's identity, what makes a resend a duplicate, is one of two keys:

- ``(experiment_id, message_id, ts)`` for an event that carries its own timestamp (the usual
  case: the Python client stamps events when they are logged, so a resend carries the same
  timestamp). A unique index on each event table enforces it; it contains the partition key
  ``ts``, so PostgreSQL enforces it per time partition (``abstats.db.partitions``), and the event
  is written once: ``COPY`` straight into the table inside a savepoint. When a row of the batch
  is already stored (a resend), the COPY fails with a unique violation, the savepoint is rolled
  back, and the batch goes through a staging table instead::

      COPY abstats_stage_prediction FROM STDIN;
      INSERT INTO prediction ... SELECT ... FROM abstats_stage_prediction
        ORDER BY experiment_id, message_id, ts ON CONFLICT DO NOTHING

  A message id sent again with *another* timestamp is another event (stored again).
- ``(experiment_id, kind, message_id)`` for an event whose timestamp the server chose (it had
  none, so a resend gets another one) and for ``/assign``'s exposures (one per unit and weight
  epoch, whenever it is logged): ``claim=True`` claims the message ids in the unpartitioned
  ``event_message`` table first and inserts only the events whose claim is new, in one statement
  (``WITH fresh AS (INSERT INTO event_message ... ON CONFLICT DO NOTHING RETURNING ...) INSERT
  ...``). That writes such an event twice, as every event was before migration 0008.

Exactly once under concurrent resends: a unique-index insert that meets a key another open
transaction inserted waits for it, then skips the row (``ON CONFLICT``) or fails the COPY (then
the staging path skips it). Rows are written in key order (sorted in code-point order here, the
order of ``message_id COLLATE "C"``; claims in the order of ``event_message``'s key), so two
transactions writing overlapping batches take the index locks in the same order and cannot
deadlock. The insert's row count tells how many events were new; the rest are duplicates.

The staging tables are ``ON COMMIT DELETE ROWS`` and are also emptied after each use, so a
connection can stage several batches in one transaction. Everything runs in the caller's
transaction (the request's); nothing commits here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg2
import psycopg2.errors
from sqlalchemy.orm import Session

from abstats.errors import DatabaseUnavailable


@dataclass(frozen=True)
class EventTable:
    name: str
    kind: str  # event_message.kind
    staging: str
    columns: tuple[str, ...]
    staging_ddl: str


# the event tables' collation (migration 0008), so that ORDER BY message_id is the index's order
MESSAGE_ID_DDL = 'message_id text COLLATE "C"'

EXPOSURE = EventTable(
    name="exposure",
    kind="e",
    staging="abstats_stage_exposure",
    columns=("experiment_id", "variant_id", "unit_id", "ts", "message_id", "source"),
    staging_ddl=(
        "experiment_id integer, variant_id integer, unit_id text, ts timestamptz, "
        + MESSAGE_ID_DDL
        + ", source varchar(16)"
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
        "error boolean, features jsonb, " + MESSAGE_ID_DDL
    ),
)
OUTCOME = EventTable(
    name="outcome",
    kind="o",
    staging="abstats_stage_outcome",
    columns=("experiment_id", "unit_id", "request_id", "name", "value", "ts", "message_id"),
    staging_ddl=(
        "experiment_id integer, unit_id text, request_id text, name varchar(64), "
        "value float8, ts timestamptz, " + MESSAGE_ID_DDL
    ),
)


def _csv_text(rows: Sequence[tuple[Any, ...]]) -> str:
    """Rows as COPY CSV. ``None`` becomes an unquoted empty field, which COPY reads as NULL;
    validation guarantees no text value is the empty string, so the two cannot be confused."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _first_of_each_key(
    table: EventTable, rows: Sequence[tuple[Any, ...]], *, with_ts: bool
) -> list[tuple[Any, ...]]:
    """Drop repeats of an event's key within the batch (the first wins; the others count as
    duplicates), so that the insert meets each key once; sorted by key (code-point order)."""
    exp = table.columns.index("experiment_id")
    msg = table.columns.index("message_id")
    ts = table.columns.index("ts")
    unique: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in rows:
        key = (row[exp], row[msg], str(row[ts])) if with_ts else (row[exp], row[msg])
        if key not in unique:
            unique[key] = row
    return [unique[key] for key in sorted(unique)]


def copy_insert(
    session: Session, table: EventTable, rows: Sequence[tuple[Any, ...]], *, claim: bool = False
) -> int:
    """Insert ``rows`` (in ``table.columns`` order) skipping events already stored; returns how
    many were new. ``claim``: the identity is the message id alone (``event_message``), else
    ``(experiment_id, message_id, ts)``; see the module docstring."""
    if not rows:
        return 0
    rows = _first_of_each_key(table, rows, with_ts=not claim)
    if "features" in table.columns:  # JSON text (validation makes it) or a dict to serialise
        at = table.columns.index("features")
        if any(type(r[at]) is dict for r in rows):
            rows = [
                (*r[:at], orjson.dumps(r[at]).decode(), *r[at + 1 :]) if type(r[at]) is dict else r
                for r in rows
            ]
    data = _csv_text(rows)
    raw = session.connection().connection
    cur: Any = raw.cursor()
    try:
        with cur:
            if claim:
                return _claim_and_insert(cur, table, data)
            return _insert(cur, table, data, len(rows))
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


def _copy(cur: Any, target: str, columns: str, data: str) -> None:
    cur.copy_expert(
        f"COPY {target} ({columns}) FROM STDIN WITH (FORMAT csv)", io.StringIO(data), size=1 << 18
    )


def _stage(cur: Any, table: EventTable, columns: str, data: str) -> None:
    cur.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {table.staging} ({table.staging_ddl}) "
        "ON COMMIT DELETE ROWS"
    )
    _copy(cur, table.staging, columns, data)


def _insert(cur: Any, table: EventTable, data: str, count: int) -> int:
    """Identity ``(experiment_id, message_id, ts)``: COPY into the table; if an event is already
    stored, through the staging table with ``ON CONFLICT DO NOTHING`` instead."""
    columns = ", ".join(table.columns)
    cur.execute("SAVEPOINT abstats_copy")
    try:
        _copy(cur, table.name, columns, data)
    except psycopg2.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT abstats_copy")
    else:
        cur.execute("RELEASE SAVEPOINT abstats_copy")
        return count
    cur.execute("RELEASE SAVEPOINT abstats_copy")
    _stage(cur, table, columns, data)
    cur.execute(
        f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {table.staging} "
        "ORDER BY experiment_id, message_id, ts ON CONFLICT DO NOTHING"
    )
    inserted: int = cur.rowcount
    cur.execute(f"DELETE FROM {table.staging}")
    return inserted


def _claim_and_insert(cur: Any, table: EventTable, data: str) -> int:
    """Identity ``(experiment_id, kind, message_id)``: claim in ``event_message``, in the order of
    its primary key (the database's default collation), and insert the events claimed afresh."""
    columns = ", ".join(table.columns)
    _stage(cur, table, columns, data)
    cur.execute(
        "WITH fresh AS ("
        " INSERT INTO event_message (experiment_id, kind, message_id)"
        f" SELECT experiment_id, '{table.kind}', message_id FROM {table.staging}"
        ' ORDER BY experiment_id, message_id COLLATE "default"'
        ' ON CONFLICT DO NOTHING RETURNING experiment_id, message_id COLLATE "C" AS message_id) '
        f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {table.staging} "
        "WHERE (experiment_id, message_id) IN (SELECT experiment_id, message_id FROM fresh) "
        "ON CONFLICT DO NOTHING"
    )
    inserted: int = cur.rowcount
    cur.execute(f"DELETE FROM {table.staging}")
    return inserted
