"""GET /v1/experiments/{key}/analysis/latest and /analysis?limit= over a real database."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from abstats.analysis.service import run_analysis

from .conftest import T0, Events, make_experiment, minutes, write_events

METRICS = [{"key": "errors", "kind": "error_rate", "role": "secondary"}]


def _events(n: int, start: int) -> Events:
    ev = Events()
    for i in range(start, start + n):
        ev.predictions.append(
            {
                "variant": ("control", "treatment")[i % 2],
                "unit_id": f"u{i}",
                "ts": T0 + minutes(i),
                "error": i % 10 == 0,
            }
        )
    return ev


def test_latest_and_history(
    client: TestClient, db_session: Session, read_headers: dict[str, str]
) -> None:
    experiment = make_experiment(db_session, metrics=METRICS)
    missing = client.get(f"/v1/experiments/{experiment.key}/analysis/latest", headers=read_headers)
    assert missing.status_code == 404
    assert f"POST /v1/experiments/{experiment.key}/analysis" in missing.json()["detail"]
    ids = []
    for batch in range(3):
        write_events(db_session, experiment, _events(40, 40 * batch))
        ids.append(run_analysis(db_session, experiment.key, wait_seconds=1).snapshot.id)
    latest = client.get(f"/v1/experiments/{experiment.key}/analysis/latest", headers=read_headers)
    assert latest.status_code == 200
    body = latest.json()
    assert body["id"] == ids[-1]
    assert body["result"]["units"] == {"control": 60, "treatment": 60}
    assert body["watermark"]["prediction_id"] > 0
    history = client.get(f"/v1/experiments/{experiment.key}/analysis?limit=2", headers=read_headers)
    assert [s["id"] for s in history.json()["data"]] == [ids[2], ids[1]]
    bad = client.get(f"/v1/experiments/{experiment.key}/analysis?limit=0", headers=read_headers)
    assert bad.status_code == 422


def test_auth_and_unknown_experiment(
    client: TestClient, read_headers: dict[str, str], ingest_headers: dict[str, str]
) -> None:
    assert client.get("/v1/experiments/nope/analysis/latest").status_code == 401
    assert (
        client.get("/v1/experiments/nope/analysis/latest", headers=ingest_headers).status_code
        == 403
    )
    unknown = client.get("/v1/experiments/nope/analysis", headers=read_headers)
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
