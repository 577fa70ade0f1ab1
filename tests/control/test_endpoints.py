"""Manual control over REST: lifecycle, weights, promote/rollback, policy, decisions, auth."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.control.conftest import experiment_body

H = dict[str, str]


def _create(client: TestClient, headers: H, **overrides: Any) -> None:
    response = client.post("/v1/experiments", json=experiment_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text


def test_lifecycle_is_recorded_as_decisions_with_the_key_as_actor(
    client: TestClient, admin_headers: H
) -> None:
    _create(client, admin_headers)
    started = client.post(
        "/v1/experiments/churn/start", json={"reason": "go"}, headers=admin_headers
    )
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["action"] == "start" and body["actor"].startswith("key:")
    assert body["weights_after"] == {"v1": 95.0, "v2": 5.0}
    assert body["reason"] == "go"
    assert client.post("/v1/experiments/churn/start", headers=admin_headers).status_code == 409
    paused = client.post("/v1/experiments/churn/pause", headers=admin_headers).json()
    assert paused["status_after"] == "paused"
    again = client.post("/v1/experiments/churn/pause", headers=admin_headers)
    assert again.status_code == 409
    assert "only a running experiment can be paused" in again.json()["detail"]
    assert (
        client.post("/v1/experiments/churn/resume", headers=admin_headers).json()["status_after"]
        == "running"
    )
    weights = client.put(
        "/v1/experiments/churn/weights",
        json={"weights": {"v1": 70, "v2": 30}, "reason": "more"},
        headers=admin_headers,
    ).json()
    assert weights["action"] == "reweight" and weights["weights_after"] == {"v1": 70.0, "v2": 30.0}
    assert weights["evidence"] == {"ramp_step": 25.0}
    exp = client.get("/v1/experiments/churn", headers=admin_headers).json()
    assert exp["weights"] == {"v1": 70.0, "v2": 30.0}
    promoted = client.post(
        "/v1/experiments/churn/promote", json={"variant": "v2"}, headers=admin_headers
    ).json()
    assert promoted["status_after"] == "concluded" and promoted["weights_after"] == {
        "v1": 0.0,
        "v2": 100.0,
    }
    late = client.post(
        "/v1/experiments/churn/rollback", json={"reason": "x"}, headers=admin_headers
    )
    assert late.status_code == 409 and "concluded" in late.json()["detail"]

    listing = client.get("/v1/experiments/churn/decisions?limit=2", headers=admin_headers).json()
    assert [d["action"] for d in listing["data"]] == ["promote", "reweight"]
    assert listing["has_more"] is True
    rest = client.get(
        f"/v1/experiments/churn/decisions?limit=10&starting_after={listing['next_cursor']}",
        headers=admin_headers,
    ).json()
    assert [d["action"] for d in rest["data"]] == ["resume", "pause", "start"]
    assert rest["has_more"] is False and rest["next_cursor"] is None


def test_rollback_sends_all_traffic_to_the_control(client: TestClient, admin_headers: H) -> None:
    _create(client, admin_headers)
    client.post("/v1/experiments/churn/start", headers=admin_headers)
    body = client.post(
        "/v1/experiments/churn/rollback", json={"reason": "bad"}, headers=admin_headers
    ).json()
    assert body["status_after"] == "rolled_back" and body["weights_after"] == {
        "v1": 100.0,
        "v2": 0.0,
    }


def test_invalid_manual_input_says_what_to_fix(client: TestClient, admin_headers: H) -> None:
    _create(client, admin_headers)
    client.post("/v1/experiments/churn/start", headers=admin_headers)
    bad = client.put(
        "/v1/experiments/churn/weights",
        json={"weights": {"v1": 50, "v9": 50}},
        headers=admin_headers,
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert bad.json()["errors"] == [
        {"field": "weights.v9", "message": "unknown variant; known: v1, v2"}
    ]
    zero = client.put(
        "/v1/experiments/churn/weights", json={"weights": {"v1": 0, "v2": 0}}, headers=admin_headers
    )
    assert zero.status_code == 422 and "positive" in zero.json()["detail"]
    unknown = client.post(
        "/v1/experiments/churn/promote", json={"variant": "v7"}, headers=admin_headers
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "variant"
    missing = client.post("/v1/experiments/nope/pause", headers=admin_headers)
    assert missing.status_code == 404


def test_policy_get_and_put_with_field_paths(
    client: TestClient, admin_headers: H, read_headers: H
) -> None:
    _create(client, admin_headers)
    policy = client.get("/v1/experiments/churn/policy", headers=read_headers).json()
    assert (
        policy["mode"] == "auto"
        and policy["on_srm"] == "pause"
        and policy["ramp"]["steps"] == [5, 25, 50, 100]
    )
    new = {**policy, "mode": "recommend", "ramp": {"steps": [10, 50], "min_interval": "15m"}}
    put = client.put("/v1/experiments/churn/policy", json=new, headers=admin_headers)
    assert put.status_code == 200 and put.json()["mode"] == "recommend"
    assert client.get("/v1/experiments/churn/policy", headers=read_headers).json()["ramp"][
        "steps"
    ] == [10, 50]
    bad = client.put(
        "/v1/experiments/churn/policy",
        json={"ramp": {"steps": [50, 25]}, "on_srm": "explode", "alpah": 0.05},
        headers=admin_headers,
    )
    assert bad.status_code == 422
    fields = {e["field"]: e["message"] for e in bad.json()["errors"]}
    assert fields["policy.ramp.steps"] == "ramp steps must increase, e.g. [5, 25, 50, 100]"
    assert "policy.on_srm" in fields
    assert fields["policy.alpah"].startswith("unknown field; did you mean 'alpha'? allowed: ")
    dur = client.put(
        "/v1/experiments/churn/policy", json={"min_runtime": "soon"}, headers=admin_headers
    )
    assert (
        dur.status_code == 422 and "use a number and a unit" in dur.json()["errors"][0]["message"]
    )
    bandit = client.put(
        "/v1/experiments/churn/policy",
        json={"ramp": None, "bandit": {"metric": "revenue"}},
        headers=admin_headers,
    )
    assert (
        bandit.status_code == 422 and bandit.json()["errors"][0]["field"] == "policy.bandit.metric"
    )


def test_scopes(client: TestClient, admin_headers: H, read_headers: H, ingest_headers: H) -> None:
    _create(client, admin_headers)
    assert client.post("/v1/experiments/churn/start").status_code == 401
    assert client.post("/v1/experiments/churn/start", headers=read_headers).status_code == 403
    assert (
        client.put("/v1/experiments/churn/policy", json={}, headers=read_headers).status_code == 403
    )
    assert client.get("/v1/experiments/churn/decisions", headers=read_headers).status_code == 200
    assert client.get("/v1/experiments/churn/policy", headers=ingest_headers).status_code == 403
