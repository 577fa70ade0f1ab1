"""Idempotency across concurrent requests: a real server, real commits, four threads."""

from __future__ import annotations

import threading
import uuid
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
