"""``POST /v1/plan`` and ``abstats plan`` (issue 17, planning): the same numbers as the engine's
planner, a read key is enough, and bad input comes back as problem+json naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from abstats.cli import app
from abstats.engine.plan import PlanRequest, plan

BODY = {
    "kind": "proportion",
    "baseline": 0.1,
    "mde": "5%",
    "traffic_per_day": 20000,
    "ramp": {"steps": [5, 25, 50], "step_duration": "12h"},
    "inference": "always_valid",
    "looks": 20,
}


def test_plan_route_returns_the_planners_numbers(
    client: TestClient, read_headers: dict[str, str]
) -> None:
    response = client.post("/v1/plan", json=BODY, headers=read_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = plan(PlanRequest.model_validate(BODY))
    assert body["units_per_variant"] == expected.units_per_variant
    assert body["days_to_decision"] == pytest.approx(expected.days_to_decision)
    assert body["summary"] == expected.summary
    assert [s["candidate_share"] for s in body["steps"]] == [5, 25, 50]


def test_plan_route_needs_a_key(client: TestClient) -> None:
    response = client.post("/v1/plan", json=BODY)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


def test_plan_route_rejects_bad_input_with_the_field(
    client: TestClient, read_headers: dict[str, str]
) -> None:
    response = client.post(
        "/v1/plan", json={**BODY, "traffic_per_day": -5, "colour": "red"}, headers=read_headers
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    fields = {e["field"] for e in response.json()["errors"]}
    assert {"traffic_per_day", "colour"} <= fields
    response = client.post(
        "/v1/plan", json={**BODY, "kind": "mean", "baseline": 4.0}, headers=read_headers
    )
    assert response.status_code == 422
    assert "needs sd" in response.json()["detail"]


def test_cli_plan_with_flags_and_with_a_file(tmp_path: Path) -> None:
    runner = CliRunner()
    flags = runner.invoke(
        app,
        [
            "plan",
            "--kind",
            "proportion",
            "--baseline",
            "0.1",
            "--mde",
            "5%",
            "--traffic",
            "20000",
            "--ramp",
            "5,25,50",
            "--step-duration",
            "12h",
            "--looks",
            "20",
            "--json",
        ],
    )
    assert flags.exit_code == 0, flags.output
    expected = plan(PlanRequest.model_validate(BODY))
    assert json.loads(flags.stdout)["units_per_variant"] == expected.units_per_variant
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(BODY))
    text = runner.invoke(app, ["plan", "-f", str(path)])
    assert text.exit_code == 0, text.output
    assert text.stdout.splitlines()[0] == expected.summary
    assert "candidate share 5%" in text.stdout
    # flags override the file
    fixed = runner.invoke(app, ["plan", "-f", str(path), "--inference", "fixed", "--json"])
    assert json.loads(fixed.stdout)["inference"] == "fixed"
    bad = runner.invoke(app, ["plan", "-f", str(path), "--ramp", "5,x"])
    assert bad.exit_code == 2 and "--ramp" in bad.output  # a user error: exit 2 (abstats.cli.main)
    missing = runner.invoke(app, ["plan", "--kind", "mean", "--baseline", "3", "--mde", "5%"])
    assert missing.exit_code == 2 and "traffic_per_day" in missing.output
