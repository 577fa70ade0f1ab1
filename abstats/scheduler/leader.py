"""Leader election: the scheduler process holding a PostgreSQL session advisory lock leads.

The lock is held on a dedicated connection (not from the pool, never in a transaction). When the
leader dies (even ``kill -9``) the server closes its session and frees the lock; a standby, which
retries every ``retry_seconds``, takes over. Jobs check :meth:`LeaderLock.is_leader` (a round
trip on the lock's connection) before doing anything, so a leader that lost its connection stops
acting at its next job. Each job is idempotent anyway (one snapshot per experiment and cut-off,
one decision per snapshot and action), so an overlap at a hand-over cannot double an effect.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, text

from abstats.logging import get_logger

log = get_logger(__name__)

SCHEDULER_LOCK_KEY = 0x61627374_02  # "abst" + 2


class LeaderLock:
    def __init__(self, engine: Engine, key: int = SCHEDULER_LOCK_KEY) -> None:
        self._engine = engine
        self._key = key
        self._conn: Any = None  # a raw DBAPI connection
        self._leader = False
        self._mutex = threading.Lock()

    def try_acquire(self) -> bool:
        """Become the leader if nobody is; True when this process leads (now or already)."""
        with self._mutex:
            if self._leader and self._alive():
                return True
            self._drop()
            try:
                fairy = self._engine.raw_connection()
                conn = fairy.driver_connection
                fairy.detach()  # our own session: the pool never hands it to anyone else
                self._conn = conn
                self._conn.autocommit = True
                with self._conn.cursor() as cur:
                    cur.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
                    self._leader = bool(cur.fetchone()[0])
            except Exception as exc:
                log.warning("scheduler.election_failed", error=str(exc))
                self._drop()
                return False
            if self._leader:
                log.info("scheduler.leader_acquired")
            else:
                self._drop()
            return self._leader

    def is_leader(self) -> bool:
        with self._mutex:
            if not self._leader:
                return False
            if not self._alive():
                log.warning("scheduler.leader_lost")
                self._drop()
                return False
            return True

    def release(self) -> None:
        with self._mutex:
            if self._leader and self._conn is not None:
                try:
                    with self._conn.cursor() as cur:
                        cur.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
                except Exception:  # the session is gone: the server released the lock
                    log.debug("scheduler.unlock_failed")
            self._drop()

    def _alive(self) -> bool:
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
            return True
        except Exception:
            return False

    def _drop(self) -> None:
        self._leader = False
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # already closed
                log.debug("scheduler.close_failed")
        self._conn = None


def leader_present(engine: Engine, key: int = SCHEDULER_LOCK_KEY) -> bool:
    """True when some scheduler process holds the leader lock (``abstats scheduler --check``,
    the compose healthcheck). A bigint advisory lock shows in ``pg_locks`` as its high and low
    32 bits in ``classid`` and ``objid``, with ``objsubid`` 1."""
    with engine.connect() as conn:
        held = conn.execute(
            text(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND objsubid = 1 AND classid::bigint = :hi AND objid::bigint = :lo"
            ),
            {"hi": key >> 32, "lo": key & 0xFFFFFFFF},
        ).first()
    return held is not None
