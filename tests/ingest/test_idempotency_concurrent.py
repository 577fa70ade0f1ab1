"""Idempotency across concurrent requests: a real server, real commits, four threads."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine, text

from tests.ingest.conftest import LiveServer


def _batch(n: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(n):
        unit = f"u{i % 37}"
        events.append(
            {
                "type": "exposure",
                "message_id": uuid.uuid4().hex,
                "experiment": "churn",
                "variant": "v1" if i % 2 else "v2",
                "unit_id": unit,
            }
        )
        events.append(
            {
                "type": "prediction",
                "message_id": uuid.uuid4().hex,
                "experiment": "churn",
                "variant": "v1" if i % 2 else "v2",
                "unit_id": unit,
                "request_id": f"r{i}",
                "score": i / n,
                "latency_ms": 5.0 + i % 7,
            }
        )
        events.append(
            {
                "type": "outcome",
                "message_id": uuid.uuid4().hex,
                "experiment": "churn",
                "unit_id": unit,
                "request_id": f"r{i}",
                "name": "converted",
                "value": i % 2,
            }
        )
    return events


def _counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM exposure), (SELECT count(*) FROM prediction), "
                "(SELECT count(*) FROM outcome)"
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


def test_same_batch_3_times_from_4_threads_is_stored_once(
    live_server: LiveServer, committed_engine: Engine
) -> None:
    events = _batch(300)  # 900 events
    headers = {"Authorization": f"Bearer {live_server.ingest_key}"}
    barrier = threading.Barrier(4)
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    lock = threading.Lock()

    def sender() -> None:
        with httpx.Client(base_url=live_server.url, headers=headers, timeout=60) as http:
            barrier.wait()
            for _ in range(3):
                r = http.post("/v1/events", json={"events": events})
                with lock:
                    if r.status_code == 200:
                        results.append(r.json())
                    else:
                        failures.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    assert len(results) == 12
    assert sum(r["accepted"] for r in results) == 900
    assert all(r["accepted"] + r["duplicates"] == 900 and r["rejected"] == [] for r in results)
    assert _counts(committed_engine) == (300, 300, 300)


def test_overlapping_timestamped_batches_from_4_threads_are_stored_once(
    live_server: LiveServer, committed_engine: Engine
) -> None:
    """Events with their own timestamps (written by COPY, keyed in their partitions): half of
    them this month, half 40 days ago (the default partition: past months are not made), so that
    a batch spans partitions. Each thread resends overlapping windows in its own shuffled order,
    so the batches meet half-way through each other's rows."""
    events = _batch(300)  # 900 events
    start = datetime.now(UTC) - timedelta(seconds=60)
    for i, event in enumerate(events):
        ts = start + timedelta(milliseconds=i) - timedelta(days=i % 2 * 40)
        event["timestamp"] = ts.isoformat()
    headers = {"Authorization": f"Bearer {live_server.ingest_key}"}
    barrier = threading.Barrier(4)
    accepted: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()

    def sender(k: int) -> None:
        order = random.Random(k)
        windows = [events[(k + j) % 4 * 150 : (k + j) % 4 * 150 + 450] for j in range(3)]
        with httpx.Client(base_url=live_server.url, headers=headers, timeout=60) as http:
            barrier.wait()
            for window in windows:
                body = order.sample(window, len(window))
                r = http.post("/v1/events", json={"events": body})
                with lock:
                    counts = r.json() if r.status_code == 200 else {}
                    if counts.get("accepted", 0) + counts.get("duplicates", 0) == len(window):
                        accepted.append(counts["accepted"])
                    else:
                        failures.append(f"{r.status_code} {r.text}")

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == []
    assert len(accepted) == 12
    assert sum(accepted) == 900  # the windows cover every event
    assert _counts(committed_engine) == (300, 300, 300)
    with committed_engine.connect() as conn:
        claims = conn.execute(text("SELECT count(*) FROM event_message")).scalar_one()
        months = conn.execute(text("SELECT count(DISTINCT tableoid) FROM prediction")).scalar()
    assert claims == 0 and months == 2
