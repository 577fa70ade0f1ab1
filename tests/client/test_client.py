"""abstats.client.Client against the real app and database (uvicorn in a thread). Faults are
injected in the HTTP transport (503s, dropped connections), never in the database."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from abstats.client import ApiError, Client
from tests.ingest.conftest import LiveServer


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


class FaultyTransport(httpx.BaseTransport):
    """Forwards to the real server after failing the first requests as told."""

    def __init__(self, faults: list[str]) -> None:
        self.inner = httpx.HTTPTransport()
        self.faults = list(faults)
        self.calls = 0
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.calls += 1
            fault = self.faults.pop(0) if self.faults else None
        if fault == "connect":
            raise httpx.ConnectError("connection refused (injected)", request=request)
        if fault == "503-after-commit":
            # the server stored the batch but the answer was lost: the retry must not double it
            self.inner.handle_request(request).read()
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "lost"})
        if fault is not None:
            return httpx.Response(
                int(fault), headers={"Retry-After": "0"}, json={"detail": "injected"}
            )
        return self.inner.handle_request(request)


def test_logs_batches_in_background_and_flushes(
    live_server: LiveServer, committed_engine: Engine
) -> None:
    with Client(
        live_server.url, live_server.ingest_key, batch_size=50, flush_interval=30
    ) as client:
        for i in range(120):
            client.log_exposure("churn", "v1", unit_id=f"u{i}")
            client.log_prediction(
                "churn",
                "v1",
                unit_id=f"u{i}",
                request_id=f"r{i}",
                score=0.5,
                latency_ms=3.0,
                features={"plan": "gold", "age": 31},
            )
            client.log_outcome(
                "churn", unit_id=f"u{i}", name="converted", value=i % 2, request_id=f"r{i}"
            )
        assert client.flush(30)
        assert client.stats.accepted == 360
        assert client.stats.batches >= 8  # 360 events in batches of at most 50
    assert (
        _count(committed_engine, "exposure"),
        _count(committed_engine, "prediction"),
        _count(committed_engine, "outcome"),
    ) == (120, 120, 120)


def test_close_flushes_what_is_left(live_server: LiveServer, committed_engine: Engine) -> None:
    client = Client(live_server.url, live_server.ingest_key, flush_interval=60)
    for i in range(7):
        client.log_prediction("churn", "v2", unit_id=f"u{i}", score=0.1)
    client.close()
    assert _count(committed_engine, "prediction") == 7
    with pytest.raises(RuntimeError, match="closed"):
        client.log_prediction("churn", "v2", unit_id="late")


def test_retries_503_429_and_connection_errors_without_double_counting(
    live_server: LiveServer, committed_engine: Engine
) -> None:
    transport = FaultyTransport(["503", "429", "connect", "503-after-commit", "502"])
    with Client(
        live_server.url,
        live_server.ingest_key,
        transport=transport,
        backoff=0.01,
        flush_interval=60,
    ) as client:
        for i in range(10):
            client.log_prediction("churn", "v1", unit_id=f"u{i}", score=0.2)
        assert client.flush(30)
        assert client.stats.retries == 5
        # the batch was committed once before its answer was lost; the final retry saw duplicates
        assert (client.stats.accepted, client.stats.duplicates, client.stats.failed) == (0, 10, 0)
    assert transport.calls == 6
    assert _count(committed_engine, "prediction") == 10


def test_never_retries_4xx(live_server: LiveServer) -> None:
    transport = FaultyTransport([])
    errors: list[tuple[ApiError, list[dict[str, Any]]]] = []
    with Client(
        live_server.url,
        "abs_nope_wrong",
        transport=transport,
        backoff=0.01,
        on_error=lambda e, batch: errors.append((e, batch)),
    ) as client:
        client.log_exposure("churn", "v1", unit_id="u1")
        assert client.flush(30)
        assert transport.calls == 1
        assert client.stats.failed == 1 and client.stats.retries == 0
        assert client.last_error is not None and client.last_error.status == 401
        assert errors and errors[0][0].detail == "Unknown or revoked API key."


def test_gives_up_after_max_retries(live_server: LiveServer) -> None:
    transport = FaultyTransport(["503"] * 10)
    with (
        Client(
            live_server.url,
            live_server.ingest_key,
            transport=transport,
            backoff=0.001,
            max_retries=2,
        ) as client,
        pytest.raises(ApiError) as info,
    ):
        client.post_events(
            [{"type": "exposure", "experiment": "churn", "variant": "v1", "unit_id": "u"}]
        )
    assert info.value.status == 503
    assert transport.calls == 3


def test_rejections_are_reported(live_server: LiveServer) -> None:
    with Client(live_server.url, live_server.ingest_key) as client:
        client.log_prediction("churn", "v1", unit_id="u1", latency_ms=-5)
        client.log_prediction("churn", "v1", unit_id="u2", latency_ms=5)
        client.flush(30)
        assert (client.stats.accepted, client.stats.rejected) == (1, 1)
        assert client.stats.rejections[0]["field"] == "events[0].latency_ms"


def test_rest_helpers(live_server: LiveServer) -> None:
    with Client(live_server.url, live_server.admin_key) as client:
        created = client.create_experiment(
            {
                "key": "helpers",
                "name": "h",
                "control": "a",
                "variants": [{"key": "a", "weight": 3}, {"key": "b", "weight": 1}],
                "metrics": [{"key": "m", "kind": "error_rate", "role": "primary"}],
            }
        )
        assert created["shares"] == {"a": 0.75, "b": 0.25}
        assert client.get_experiment("helpers")["status"] == "draft"
        with pytest.raises(ApiError) as info:
            client.get_experiment("missing")
        assert info.value.status == 404 and "No experiment" in info.value.detail
        result = client.post_events(
            [{"type": "outcome", "experiment": "helpers", "unit_id": "u", "name": "x", "value": 1}],
            strict=True,
        )
        assert result["accepted"] == 1
