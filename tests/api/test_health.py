from __future__ import annotations

from fastapi.testclient import TestClient


def test_livez(client: TestClient) -> None:
    r = client.get("/livez")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_readyz_at_head(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["database"] == "ok"


def test_metrics_is_prometheus_text(client: TestClient) -> None:
    client.get("/livez")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert "abstats_http_requests_total" in r.text


def test_unknown_route_is_problem_json(client: TestClient) -> None:
    r = client.get("/v1/nope")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 404
