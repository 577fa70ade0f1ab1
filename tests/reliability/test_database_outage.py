"""PostgreSQL outage under load: 503 with Retry-After while it is down, never a 500, full recovery
without restarting the API, nothing acknowledged lost.

tests/ingest/test_database_outage.py checks one request at a time; here three loader threads keep
posting batches (resending each until a 200, as the Python client does) and a reader keeps reading,
while a throwaway cluster is stopped twice: once with ``-m fast`` (sessions ended cleanly) and once
with ``-m immediate`` (a crash of the database server; recovery at restart).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine

from tests.reliability.harness import (
    ApiProcess,
    Loader,
    ThrowawayPostgres,
    seed,
    start_thread,
    stored_message_ids,
    subprocess_env,
    wait_for,
)

pytestmark = pytest.mark.embedded

DOWN_SECONDS = 3.0
LOADERS = 3


class Reader:
    """Reads the experiment in a loop; counts statuses and checks every 503 carries Retry-After."""

    def __init__(self, url: str, admin_key: str) -> None:
        self.url = url
        self.admin_key = admin_key
        self.statuses: Counter[str] = Counter()
        self.bad_answers: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as http:
            while not self.stop.is_set():
                try:
                    r = http.get("/v1/experiments/reliable")
                except httpx.TransportError as exc:
                    self.statuses[type(exc).__name__] += 1
                    continue
                self.statuses[str(r.status_code)] += 1
                if r.status_code == 503:
                    if not r.headers.get("retry-after", "").isdigit():
                        self.bad_answers.append(f"503 without Retry-After: {r.headers}")
                    if not r.headers["content-type"].startswith("application/problem+json"):
                        self.bad_answers.append(f"503 not problem+json: {r.text[:200]}")
                elif r.status_code != 200:
                    self.bad_answers.append(f"{r.status_code}: {r.text[:300]}")
                time.sleep(0.02)


def test_outages_under_load_answer_503_and_recover_without_restart(
    throwaway_pg: ThrowawayPostgres,
    api_factory: Callable[[dict[str, str]], ApiProcess],
    tmp_path: Path,
) -> None:
    from abstats.db import migrate
    from abstats.db.engine import make_engine

    engine = make_engine(throwaway_pg.url, pool_size=2)
    migrate.upgrade(engine)
    seeded = seed(engine)
    engine.dispose()
    api = api_factory(subprocess_env(throwaway_pg.url, tmp_path / "data"))
    api.start()
    api.wait_ready()
    pid = api.pid

    loader = Loader(api.url, seeded.ingest_key, batch_size=150, retry_inline=True)
    reader = Reader(api.url, seeded.admin_key)
    threads = [start_thread(loader.run) for _ in range(LOADERS)] + [start_thread(reader.run)]
    recoveries: list[float] = []
    outage_503s: list[int] = []
    try:
        for mode in ("fast", "immediate"):
            ok_before = loader.statuses["200"]
            wait_for(lambda b=ok_before: loader.statuses["200"] >= b + 10, 30, "load before outage")
            unavailable_before = loader.statuses["503"]
            throwaway_pg.stop(mode)
            time.sleep(DOWN_SECONDS)
            with httpx.Client(base_url=api.url, timeout=10) as http:
                ready = http.get("/readyz")
                assert ready.status_code == 503 and "retry-after" in ready.headers
            outage_503s.append(loader.statuses["503"] - unavailable_before)
            assert outage_503s[-1] > 0, "no 503 while the database was down"
            ok_at_restart = loader.statuses["200"]
            restarted = time.monotonic()
            throwaway_pg.start()
            wait_for(
                lambda b=ok_at_restart: loader.statuses["200"] >= b + 10,
                30,
                f"ingest to recover after the {mode} stop",
            )
            recoveries.append(time.monotonic() - restarted)
    finally:
        loader.stop()
        reader.stop.set()
        for thread in threads:
            thread.join(30)

    assert api.proc is not None and api.proc.poll() is None and api.pid == pid, (
        "the API process must survive the outages"
    )
    print(
        f"\noutage under load: 503s per outage {outage_503s}, recovery after restart "
        f"{[f'{r:.1f}s' for r in recoveries]}; ingest answers {dict(loader.statuses)}; "
        f"reads {dict(reader.statuses)}"
    )
    assert not loader.bad_answers, loader.bad_answers[:5]
    assert not reader.bad_answers, reader.bad_answers[:5]
    allowed = {"200", "503"}
    assert set(loader.statuses) <= allowed, loader.statuses
    assert set(reader.statuses) <= allowed, reader.statuses

    # the batches cut short by stop() were never acknowledged: resend them (same message ids)
    loader.drain()
    check = create_engine(throwaway_pg.url)
    try:
        stored = stored_message_ids(check, seeded.experiment_id)
    finally:
        check.dispose()
    print(
        f"events generated {loader.generated}, acknowledged {len(loader.acknowledged)}, "
        f"stored {sum(stored.values())}"
    )
    assert not (loader.acknowledged - stored.keys()), "acknowledged events were lost"
    assert all(n == 1 for n in stored.values()), "an event was stored twice"
    assert sum(stored.values()) == loader.generated == len(loader.acknowledged)
    assert "Traceback" not in api.all_logs(), api.all_logs()[-3000:]
