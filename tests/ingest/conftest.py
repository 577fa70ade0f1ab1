from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

EXPERIMENT = {
    "key": "churn",
    "name": "Churn",
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


@pytest.fixture
def experiment(client: TestClient, admin_headers: dict[str, str]) -> dict[str, Any]:
    r = client.post("/v1/experiments", json=EXPERIMENT, headers=admin_headers)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


@dataclass
class LiveServer:
    url: str
    ingest_key: str
    admin_key: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_server(committed_engine: Engine) -> Iterator[LiveServer]:
    """The real app under uvicorn in a thread, on the test database with real commits, and an
    experiment 'churn' (v1, v2) plus ingest and admin keys."""
    import uvicorn

    from abstats import keys
    from abstats.api.app import create_app
    from abstats.experiments.schemas import parse_create
    from abstats.experiments.service import create_experiment, invalidate_refs

    invalidate_refs()
    with Session(committed_engine) as session:
        create_experiment(session, parse_create(EXPERIMENT))
        ingest_key = keys.create_key(session, scope="ingest").secret
        admin_key = keys.create_key(session, scope="admin").secret
        session.commit()
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield LiveServer(f"http://127.0.0.1:{port}", ingest_key, admin_key)
    server.should_exit = True
    thread.join(10)
    invalidate_refs()
