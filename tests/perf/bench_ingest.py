"""Benchmark: POST /v1/events against the physical limit, raw COPY into the same table.

    .venv/bin/python tests/perf/bench_ingest.py                 # 1,000,000 predictions
    .venv/bin/python tests/perf/bench_ingest.py --events 100000 # shorter

1. Creates a scratch database on the local PostgreSQL (``--server``, default
   postgresql://postgres@127.0.0.1:5432/postgres), migrates it, registers an experiment.
2. Physical limit: COPYs the very rows the API will store (same ids, same message_ids) straight
   into ``prediction``, in batches of ``--batch`` over ``--concurrency`` connections, one commit
   per batch, and also as one single stream; the faster counts. Then empties the table. The
   table's indexes include the unique ``(experiment_id, message_id, ts)`` key (migration 0008), so
   the limit pays for the index that makes ingest idempotent, as the API does; the same COPY
   without that index is timed too and printed as a second ratio.
3. Starts the API (uvicorn, ``--workers``) as a subprocess and, from a separate load-generator
   process with ``--concurrency`` connections, posts the same events as JSON batches. Bodies are
   serialised before the clock starts, so the generator measures the API, not itself.
4. Prints events/s for both, their ratio, the API's peak RSS, p50/p99 batch latency, and checks
   that every event was stored exactly once.
"""

from __future__ import annotations

import argparse
import csv
import io
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg2
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def make_events(n: int, seed_time: datetime) -> list[dict[str, Any]]:
    events = []
    for i in range(n):
        unit = f"u{i % 200_000}"
        events.append(
            {
                "type": "prediction",
                "message_id": uuid.uuid4().hex,
                "experiment": "bench",
                "variant": "v1" if i % 2 else "v2",
                "unit_id": unit,
                "request_id": f"r{i}",
                "timestamp": (seed_time + timedelta(milliseconds=i)).isoformat(),
                "score": (i % 1000) / 1000.0,
                "latency_ms": 5.0 + (i % 97) / 10.0,
                "error": i % 500 == 0,
                "features": {"tenure": i % 60, "plan": ("free", "pro", "gold")[i % 3]},
            }
        )
    return events


def rows_for_copy(
    events: list[dict[str, Any]], exp_id: int, variant_ids: dict[str, int]
) -> list[tuple[Any, ...]]:
    return [
        (
            exp_id,
            variant_ids[e["variant"]],
            e["unit_id"],
            e["request_id"],
            e["timestamp"],
            e["score"],
            None,
            None,
            e["latency_ms"],
            e["error"],
            orjson.dumps(e["features"]).decode(),
            e["message_id"],
        )
        for e in events
    ]


COPY_COLUMNS = (
    "experiment_id, variant_id, unit_id, request_id, ts, score, label, value, "
    "latency_ms, error, features, message_id"
)


def csv_text(rows: list[tuple[Any, ...]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def timed_workers(
    items: list[Any],
    concurrency: int,
    open_worker: Callable[[], AbstractContextManager[Callable[[Any], None]]],
) -> float:
    """Seconds for ``concurrency`` threads to drain ``items``; each thread opens its own
    connection with ``open_worker()`` (a context manager yielding ``write(item)``)."""
    work = list(items)
    lock = threading.Lock()

    def worker() -> None:
        with open_worker() as write:
            while True:
                with lock:
                    if not work:
                        return
                    item = work.pop()
                write(item)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def raw_copy(dsn: str, chunks: list[str], concurrency: int) -> float:
    """COPY pre-rendered CSV chunks over ``concurrency`` connections; one commit per chunk."""

    @contextmanager
    def copier() -> Iterator[Callable[[str], None]]:
        conn = psycopg2.connect(dsn)

        def write(chunk: str) -> None:
            with conn.cursor() as cur:
                cur.copy_expert(
                    f"COPY prediction ({COPY_COLUMNS}) FROM STDIN WITH (FORMAT csv)",
                    io.StringIO(chunk),
                    size=1 << 18,
                )
            conn.commit()

        try:
            yield write
        finally:
            conn.close()

    return timed_workers(chunks, concurrency, copier)


def store_path(engine: Any, row_batches: list[list[tuple[Any, ...]]], concurrency: int) -> float:
    """The API's own write path without HTTP, parsing or validation: ``copy_insert`` (events with
    their own timestamps: the batch sorted and COPY'd into the table under a savepoint, the
    unique ``(experiment_id, message_id, ts)`` index catching resends) on ``concurrency`` threads,
    one commit per batch. What the design costs in the database alone, so the ratio's ceiling is
    visible."""
    from sqlalchemy.orm import Session

    from abstats.ingest.repository import PREDICTION, copy_insert

    @contextmanager
    def storer() -> Iterator[Callable[[list[tuple[Any, ...]]], None]]:
        with Session(engine) as session:

            def write(rows: list[tuple[Any, ...]]) -> None:
                copy_insert(session, PREDICTION, rows)
                session.commit()

            yield write

    return timed_workers(row_batches, concurrency, storer)


def load_generator(url: str, key: str, bodies: list[bytes], concurrency: int, out: Any) -> None:
    """Runs in its own process: posts every body, ``concurrency`` at a time."""
    import httpx

    work = list(range(len(bodies)))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    accepted = [0]

    def worker() -> None:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            while True:
                with lock:
                    if not work:
                        return
                    i = work.pop()
                t0 = time.perf_counter()
                r = http.post("/v1/events", content=bodies[i])
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if r.status_code == 200:
                        accepted[0] += r.json()["accepted"]
                    else:
                        failures.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(
        {
            "seconds": time.perf_counter() - start,
            "latencies": latencies,
            "failures": failures,
            "accepted": accepted[0],
        }
    )


class PeakRss:
    """Samples the RSS of a process and its children (uvicorn workers) every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak_total = 0
        self.peak_single = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                rss = [p.memory_info().rss for p in procs]
                self.peak_total = max(self.peak_total, sum(rss))
                self.peak_single = max(self.peak_single, max(rss))
            except psutil.Error:
                pass
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--server",
        default=os.environ.get(
            "ABSTATS_BENCH_SERVER", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()

    from abstats.db import migrate
    from abstats.db.engine import make_engine, normalize_url

    server = make_url(normalize_url(args.server))
    name = f"abstats_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name)
    sa_url = url.render_as_string(hide_password=False)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    api: subprocess.Popen[bytes] | None = None
    try:
        engine = make_engine(sa_url)
        migrate.upgrade(engine)
        os.environ["ABSTATS_DATABASE_URL"] = sa_url
        from sqlalchemy.orm import Session

        from abstats import keys
        from abstats.experiments.schemas import parse_create
        from abstats.experiments.service import create_experiment

        with Session(engine) as session:
            exp = create_experiment(
                session,
                parse_create(
                    {
                        "key": "bench",
                        "name": "bench",
                        "control": "v1",
                        "variants": [{"key": "v1"}, {"key": "v2"}],
                        "metrics": [{"key": "err", "kind": "error_rate", "role": "primary"}],
                    }
                ),
            )
            exp_id = exp.id
            variant_ids = {v.key: v.id for v in exp.variants}
            key = keys.create_key(session, scope="ingest").secret
            session.commit()

        print(
            f"preparing {args.events:,} prediction events in batches of {args.batch} ...",
            flush=True,
        )
        events = make_events(args.events, datetime.now(UTC) - timedelta(days=1))
        batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
        bodies = [orjson.dumps({"events": b}) for b in batches]
        chunks = [csv_text(rows_for_copy(b, exp_id, variant_ids)) for b in batches]
        row_batches = [
            [(*r[:10], orjson.loads(r[10]), r[11]) for r in rows_for_copy(b, exp_id, variant_ids)]
            for b in batches
        ]
        del batches

        def truncate() -> None:
            with engine.begin() as conn:
                conn.execute(text("TRUNCATE prediction, event_message"))
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(
                    text("VACUUM ANALYZE prediction")
                )

        # --- physical limit: raw COPY of the same rows into the same table ---------------------
        copy_parallel = raw_copy(dsn, chunks, args.concurrency)
        truncate()
        copy_single = raw_copy(dsn, ["".join(chunks)], 1)
        truncate()
        copy_seconds = min(copy_parallel, copy_single)
        # the same without the idempotency key, to show what that index costs raw COPY
        key_index = "uq_prediction_experiment_id_message_id_ts"
        with engine.begin() as conn:
            key_ddl = conn.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"), {"n": key_index}
            ).scalar_one()
            conn.execute(text(f"DROP INDEX {key_index}"))
        copy_keyless = raw_copy(dsn, chunks, args.concurrency)
        truncate()
        with engine.begin() as conn:
            conn.execute(text(key_ddl))
        del chunks
        store_seconds = store_path(engine, row_batches, args.concurrency)
        truncate()
        del row_batches

        # --- the API ---------------------------------------------------------------------------
        port = free_port()
        env = {**os.environ, "ABSTATS_DATABASE_URL": sa_url, "ABSTATS_LOG_LEVEL": "WARNING"}
        api = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "abstats.api.asgi:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=ROOT,
        )
        base = f"http://127.0.0.1:{port}"
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the API did not become ready")
            time.sleep(0.2)
        # warm-up (imports, connection pools, key and experiment caches) with a separate batch
        warm = orjson.dumps({"events": make_events(args.batch, datetime.now(UTC))})
        for _ in range(2 * args.workers):
            httpx.post(
                f"{base}/v1/events",
                content=warm,
                timeout=60,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
        truncate()

        rss = PeakRss(api.pid)
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        loader = ctx.Process(
            target=load_generator, args=(base, key, bodies, args.concurrency, results)
        )
        loader.start()
        outcome = results.get()
        loader.join()
        rss.stop()

        with engine.connect() as conn:
            stored = conn.execute(
                text("SELECT count(*), count(DISTINCT message_id) FROM prediction")
            ).one()
        lat = sorted(outcome["latencies"])
        api_rate = args.events / outcome["seconds"]
        copy_rate = args.events / copy_seconds
        print()
        print(
            f"events                   {args.events:,} predictions, batches of {args.batch}, "
            f"{args.concurrency} connections, {args.workers} uvicorn worker(s), {os.cpu_count()} CPUs"
        )
        print(
            f"raw COPY (limit)         {copy_rate:,.0f} events/s  "
            f"({args.concurrency} streams {args.events / copy_parallel:,.0f}/s, "
            f"1 stream {args.events / copy_single:,.0f}/s)"
        )
        store_rate = args.events / store_seconds
        print(
            f"store path, no HTTP      {store_rate:,.0f} events/s  (sort + COPY under a savepoint; "
            f"{store_rate / copy_rate:.2f} of raw COPY)"
        )
        print(f"API POST /v1/events      {api_rate:,.0f} events/s  ({outcome['seconds']:.1f} s)")
        print(f"ratio API / raw COPY     {api_rate / copy_rate:.2f}   (target >= 0.5, floor 0.25)")
        keyless_rate = args.events / copy_keyless
        print(
            f"ratio API / raw COPY without the idempotency key {api_rate / keyless_rate:.2f}   "
            f"(raw COPY {keyless_rate:,.0f} events/s, {args.concurrency} streams)"
        )
        print(f"ratio API / store path   {api_rate / store_rate:.2f}   (HTTP, parsing, validation)")
        print(
            f"API peak RSS             {rss.peak_single / 2**20:.0f} MB per process, "
            f"{rss.peak_total / 2**20:.0f} MB all workers"
        )
        print(
            f"batch latency            p50 {statistics.median(lat) * 1000:.1f} ms, "
            f"p99 {lat[int(0.99 * (len(lat) - 1))] * 1000:.1f} ms"
        )
        print(
            f"stored                   {stored[0]:,} rows, {stored[1]:,} distinct message_ids, "
            f"failures {len(outcome['failures'])}"
        )
        ok = (
            stored[0] == stored[1] == args.events == outcome["accepted"] and not outcome["failures"]
        )
        if outcome["failures"]:
            print("first failure:", outcome["failures"][0])
        return 0 if ok else 1
    finally:
        if api is not None:
            api.terminate()
            api.wait(30)
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


if __name__ == "__main__":
    raise SystemExit(main())
