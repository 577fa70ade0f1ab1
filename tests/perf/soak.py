"""Soak: the API under steady ingest load for minutes; memory flat, zero errors, counts exact.

    .venv/bin/python tests/perf/soak.py                  # 10 minutes at half the measured capacity
    .venv/bin/python tests/perf/soak.py --minutes 2      # shorter
    .venv/bin/python tests/perf/soak.py --rate 3000      # fixed rate (events/s), no capacity phase

1. Creates a scratch database on the local PostgreSQL (``--server``), migrates it, registers an
   experiment, and starts ``abstats serve`` as a subprocess on 127.0.0.1.
2. Capacity (unless ``--rate``): ``--concurrency`` connections post pre-serialised batches of
   ``--batch`` mixed events as fast as the API acknowledges them for ``--capacity-seconds``.
3. Soak: fresh batches at a fixed pace, half the measured capacity (or ``--rate``), for
   ``--minutes``. The API's RSS is sampled every 10 s; "start" is taken after the first minute
   of the soak (or a tenth of it, if shorter) so that caches and the pool are warm.
4. Prints RSS start/end/peak, latencies, answers; exits non-zero when RSS grew by 10 % or more,
   any request was not a 200, or the stored rows differ from the acknowledged events.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine  # noqa: E402

from tests.reliability.harness import (  # noqa: E402
    ApiProcess,
    create_scratch_database,
    drop_database,
    event_counts,
    make_events,
    seed,
    subprocess_env,
)


class Poster:
    """Thread-safe counters around one httpx client per thread."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.local = threading.local()
        self.lock = threading.Lock()
        self.statuses: Counter[str] = Counter()
        self.errors: list[str] = []
        self.latencies: list[float] = []
        self.acknowledged = 0

    def _client(self) -> httpx.Client:
        client = getattr(self.local, "client", None)
        if client is None:
            client = httpx.Client(
                base_url=self.url,
                headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
                timeout=30,
            )
            self.local.client = client
        return client

    def post(self, body: bytes, n: int) -> bool:
        started = time.perf_counter()
        try:
            r = self._client().post("/v1/events", content=body)
        except httpx.TransportError as exc:
            with self.lock:
                self.statuses[type(exc).__name__] += 1
                self.errors.append(repr(exc))
            return False
        elapsed = time.perf_counter() - started
        with self.lock:
            self.statuses[str(r.status_code)] += 1
            if r.status_code != 200:
                self.errors.append(f"{r.status_code}: {r.text[:300]}")
                return False
            result = r.json()
            if result["accepted"] != n or result["rejected"]:
                self.errors.append(f"200 with {result} for {n} fresh events")
                return False
            self.acknowledged += n
            self.latencies.append(elapsed)
        return True


def body_of(batch_no: int, size: int) -> bytes:
    return orjson.dumps({"events": make_events("reliable", batch_no, size)})


def measure_capacity(poster: Poster, args: argparse.Namespace) -> float:
    """Events/s the API acknowledges with ``--concurrency`` connections posting back to back."""
    bodies = [body_of(1_000_000 + i, args.batch) for i in range(args.capacity_batches)]
    position = iter(range(len(bodies)))
    position_lock = threading.Lock()
    deadline = time.monotonic() + args.capacity_seconds
    done = Counter[str]()

    def worker() -> None:
        while time.monotonic() < deadline:
            with position_lock:
                i = next(position, None)
            if i is None:
                return
            if poster.post(bodies[i], args.batch):
                with position_lock:
                    done["events"] += args.batch

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    if done["events"] == 0:
        raise SystemExit(f"capacity phase acknowledged nothing: {poster.errors[:3]}")
    return done["events"] / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--server",
        default=os.environ.get(
            "ABSTATS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=None, help="events/s; default: half capacity")
    parser.add_argument("--batch", type=int, default=300, help="events per request")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--capacity-seconds", type=float, default=15.0)
    parser.add_argument("--capacity-batches", type=int, default=600)
    args = parser.parse_args()

    url = create_scratch_database(args.server, prefix="abstats_soak")
    engine = create_engine(url, pool_size=2)
    tmp = Path(tempfile.mkdtemp(prefix="abstats-soak-"))
    api = ApiProcess(subprocess_env(url, tmp / "data"), tmp)
    try:
        seeded = seed(engine)
        api.start()
        api.wait_ready()
        proc = psutil.Process(api.pid)
        poster = Poster(api.url, seeded.ingest_key)

        if args.rate is None:
            capacity = measure_capacity(poster, args)
            rate = capacity / 2
            print(
                f"capacity: {capacity:,.0f} events/s ({args.concurrency} connections, "
                f"batches of {args.batch}); soaking at half: {rate:,.0f} events/s"
            )
        else:
            capacity = float("nan")
            rate = args.rate
            print(f"soaking at --rate {rate:,.0f} events/s")
        capacity_acknowledged = poster.acknowledged

        interval = args.batch / rate  # seconds between batches
        total = args.minutes * 60
        warmup = min(60.0, total / 10)
        rss: list[tuple[float, int]] = []
        pool = ThreadPoolExecutor(max_workers=args.concurrency * 2)
        started = time.monotonic()
        next_send = started
        next_sample = started
        batch_no = 0
        late = 0
        futures = []
        while (now := time.monotonic()) < started + total:
            if now >= next_sample:
                rss.append((now - started, proc.memory_info().rss))
                next_sample += 10
            if now < next_send:
                time.sleep(min(next_send - now, 0.05))
                continue
            if now - next_send > 1.0:
                late += 1  # the generator fell behind by more than a second
            batch_no += 1
            futures.append(pool.submit(poster.post, body_of(batch_no, args.batch), args.batch))
            next_send += interval
        for f in futures:
            f.result()
        pool.shutdown()
        elapsed = time.monotonic() - started
        rss.append((elapsed, proc.memory_info().rss))

        soak_events = batch_no * args.batch
        stored = sum(event_counts(engine, seeded.experiment_id).values())
        expected = capacity_acknowledged + soak_events
        start_rss = next(r for t, r in rss if t >= warmup)
        end_rss = rss[-1][1]
        peak_rss = max(r for _, r in rss)
        growth = (end_rss - start_rss) / start_rss
        soak_latencies = sorted(poster.latencies[-len(futures) :]) or [0.0]
        p50 = statistics.median(soak_latencies)
        p99 = soak_latencies[int(0.99 * (len(soak_latencies) - 1))]
        print(
            f"soak: {elapsed / 60:.1f} min, {soak_events:,} events in {batch_no:,} batches "
            f"({soak_events / elapsed:,.0f} events/s achieved, target {rate:,.0f}); "
            f"batch latency p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; "
            f"generator late {late} times"
        )
        print(
            f"RSS of the API: start {start_rss / 2**20:.1f} MiB (at {warmup:.0f}s), "
            f"end {end_rss / 2**20:.1f} MiB, peak {peak_rss / 2**20:.1f} MiB; "
            f"growth {growth:+.1%} (limit +10%)"
        )
        print(f"answers: {dict(poster.statuses)}; errors: {len(poster.errors)}")
        print(
            f"counts: acknowledged {poster.acknowledged:,}, generated {expected:,}, "
            f"stored {stored:,}"
        )
        failures = []
        if growth >= 0.10:
            failures.append(f"RSS grew {growth:.1%}")
        if poster.errors:
            failures.append(f"{len(poster.errors)} errors, e.g. {poster.errors[:3]}")
        if not (stored == expected == poster.acknowledged):
            failures.append("stored rows differ from acknowledged events")
        if failures:
            print("FAIL: " + "; ".join(failures))
            return 1
        print("OK: memory flat, zero errors, counts exact")
        return 0
    finally:
        api.stop()
        engine.dispose()
        drop_database(url)


if __name__ == "__main__":
    raise SystemExit(main())
