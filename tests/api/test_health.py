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


def test_metrics_is_prometheus_text(client: TestClient, read_headers: dict[str, str]) -> None:
    client.get("/livez")
    client.get("/v1/experiments/no-such-experiment", headers=read_headers)
    r = client.get("/metrics")
    assert r.status_code == 200
    # labelled by route template (bounded), with the status class the client saw
    assert 'abstats_http_requests_total{route="/livez",status="2xx"}' in r.text
    assert 'abstats_http_requests_total{route="/v1/experiments/{key}",status="4xx"}' in r.text
    assert 'abstats_http_request_seconds_bucket{le="0.001",route="/livez"}' in r.text


def test_unknown_route_is_problem_json(client: TestClient) -> None:
    r = client.get("/v1/nope")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 404
