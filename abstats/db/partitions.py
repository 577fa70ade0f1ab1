"""Time partitioning of the event tables (PostgreSQL native declarative partitioning).

``exposure``, ``prediction`` and ``outcome`` are ``PARTITION BY RANGE (ts)`` with one partition per
calendar month (``prediction_p2026_11``) and a ``DEFAULT`` partition that catches anything outside
the monthly ones (old backfills, clock skew). Old months can be detached or dropped in O(1)
instead of a long ``DELETE``, and the analysis's index range scans stay within recent months.

Idempotency (migration 0008, ``abstats.ingest.repository``): a partitioned unique index must
contain the partition key, so each event table has a unique index on ``(experiment_id,
message_id, ts)``, which PostgreSQL enforces partition by partition. An event with its own
timestamp is identified by its message id and timestamp, its key lives in its month's partition,
and it is written once; a resend carries the same ``ts``, lands in the same partition and meets
the key there. Dropping a month drops its keys with its rows, so within the months kept a resend
is a duplicate. An event whose ``ts`` the server chose (a resend gets another one) and
``/assign``'s exposures are identified by message id alone, through a claim of ``(experiment_id,
kind, message_id)`` in the unpartitioned ``event_message`` table, which outlives the partitions.
``experiment_id`` leads every key, which is what a distributed PostgreSQL (Citus, distributing by
``experiment_id``) needs.

``ensure_partitions`` creates the months from the current one to ``months_ahead`` ahead; it runs
after every migration and daily in the scheduler. A month whose rows already sit in the default
partition is left there (PostgreSQL refuses to create it); ``abstats db partitions`` reports them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import Connection, text

EVENT_TABLES = ("exposure", "prediction", "outcome")
KIND_OF_TABLE = {"exposure": "e", "prediction": "p", "outcome": "o"}
_PARTITION = re.compile(r"^(exposure|prediction|outcome)_(p\d{4}_\d{2}|default)$")


def is_partition(name: str) -> bool:
    """Whether ``name`` is one of the event tables' partitions (not modelled by the ORM)."""
    return bool(_PARTITION.match(name))


def month_start(day: date) -> date:
    return date(day.year, day.month, 1)


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: date) -> str:
    return f"{table}_p{month.year:04d}_{month.month:02d}"


@dataclass(frozen=True)
class PartitionReport:
    created: list[str]
    existing: list[str]
    blocked: list[str]  # months whose rows are already in the default partition


def ensure_partitions(
    conn: Connection,
    *,
    months_ahead: int = 3,
    start: date | None = None,
    today: date | None = None,
) -> PartitionReport:
    """Create the default partition and the monthly ones from ``start`` (default: this month)
    to ``months_ahead`` months ahead. Idempotent; the caller commits."""
    today = today or datetime.now(UTC).date()
    first = month_start(start or today)
    last = add_months(month_start(today), months_ahead)
    created: list[str] = []
    existing: list[str] = []
    blocked: list[str] = []
    present = {
        row[0]
        for row in conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ANY(:tables) "
                "AND pg_table_is_visible(p.oid)"
            ),
            {"tables": list(EVENT_TABLES)},
        )
    }
    for table in EVENT_TABLES:
        default = f"{table}_default"
        if default not in present:
            conn.execute(text(f"CREATE TABLE {default} PARTITION OF {table} DEFAULT"))
            created.append(default)
        month = first
        while month <= last:
            name = partition_name(table, month)
            if name in present:
                existing.append(name)
            else:
                following = add_months(month, 1)
                savepoint = conn.begin_nested()
                try:
                    conn.execute(
                        text(
                            f"CREATE TABLE {name} PARTITION OF {table} "
                            f"FOR VALUES FROM ('{month.isoformat()} 00:00:00+00') "
                            f"TO ('{following.isoformat()} 00:00:00+00')"
                        )
                    )
                    savepoint.commit()
                    created.append(name)
                except Exception as exc:  # rows of that month already in the default partition
                    savepoint.rollback()
                    if "default partition" not in str(exc):
                        raise
                    blocked.append(name)
            month = add_months(month, 1)
    return PartitionReport(created, existing, blocked)


def list_partitions(conn: Connection) -> list[tuple[str, str, int]]:
    """``(table, partition, estimated rows)`` for every event-table partition, oldest first."""
    rows = conn.execute(
        text(
            "SELECT p.relname, c.relname, greatest(c.reltuples, 0)::bigint "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = ANY(:tables) AND pg_table_is_visible(p.oid) "
            "ORDER BY p.relname, c.relname"
        ),
        {"tables": list(EVENT_TABLES)},
    )
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]
