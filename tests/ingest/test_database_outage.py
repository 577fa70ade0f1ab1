"""503 with Retry-After while PostgreSQL is down, and recovery without restarting the API.

A throwaway PostgreSQL (the embedded wheel's server in a temp dir) is stopped and started again
under a real ``abstats serve`` process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.harness import ThrowawayPostgres, throwaway_pgdata

pytestmark = pytest.mark.embedded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def throwaway_pg() -> Iterator[ThrowawayPostgres]:
    pg = ThrowawayPostgres(throwaway_pgdata())
    yield pg
    pg.cleanup()


def _events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "prediction",
            "message_id": uuid.uuid4().hex,
            "experiment": "outage",
            "variant": "v2",
            "unit_id": f"u{i}",
            "score": 0.5,
        }
        for i in range(n)
    ]


def test_503_while_database_is_down_and_recovery(
    throwaway_pg: ThrowawayPostgres, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTATS_")}
    env.update(
        ABSTATS_DATABASE_URL=throwaway_pg.url,
        ABSTATS_DATA_DIR=str(tmp_path / "data"),
        ABSTATS_LOG_JSON="false",
    )
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "abstats", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # the first admin key is written to the data dir, never printed (issue 14)
        key_file = tmp_path / "data" / "admin-key"
        admin_key = ""
        deadline = time.monotonic() + 60
        while not admin_key and time.monotonic() < deadline and proc.poll() is None:
            if key_file.exists():
                admin_key = key_file.read_text().strip()
            else:
                time.sleep(0.1)
        assert admin_key.startswith("abs_"), "abstats serve did not write the first admin key"
        base = f"http://127.0.0.1:{port}"
        http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
        )
        while True:
            try:
                if http.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "API not ready"
            time.sleep(0.2)
        r = http.post(
            "/v1/experiments",
            json={
                "key": "outage",
                "name": "outage",
                "control": "v1",
                "variants": [{"key": "v1"}, {"key": "v2"}],
                "metrics": [
                    {
                        "key": "s",
                        "kind": "mean",
                        "outcome": "x",
                        "role": "primary",
                        "direction": "increase",
                    }
                ],
            },
        )
        assert r.status_code == 201, r.text
        before = _events(20)
        assert http.post("/v1/events", json={"events": before}).json()["accepted"] == 20

        throwaway_pg.stop()
        during = _events(20)
        r = http.post("/v1/events", json={"events": during})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"].isdigit()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "retry" in r.json()["detail"].lower()
        r = http.get("/v1/experiments/outage")
        assert r.status_code == 503 and "retry-after" in r.headers
        assert http.get("/readyz").status_code == 503

        throwaway_pg.start()
        r = http.post("/v1/events", json={"events": during})  # the client's retry
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": 20, "duplicates": 0, "rejected": []}
        r = http.post("/v1/events", json={"events": before})
        assert r.json() == {"accepted": 0, "duplicates": 20, "rejected": []}
        assert proc.poll() is None  # the same API process throughout
    finally:
        proc.terminate()
        proc.wait(20)
