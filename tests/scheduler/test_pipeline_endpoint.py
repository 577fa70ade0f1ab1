"""POST /v1/experiments/{key}/analysis runs the pipeline (its own transactions: real commits)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from abstats.db.models import Experiment, Prediction, Variant, WeightEpoch
from abstats.keys import create_key

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def app_client(committed_engine: Engine) -> Iterator[TestClient]:
    from abstats.api.app import create_app

    with TestClient(create_app()) as client:
        yield client


def test_runs_the_pipeline_once_per_data_state(
    committed_engine: Engine, app_client: TestClient
) -> None:
    with Session(committed_engine) as session:
        admin = create_key(session, scope="admin", name="t").secret
        read = create_key(session, scope="read", name="t").secret
        experiment = Experiment(
            key="pipe",
            name="p",
            status="running",
            control_variant="a",
            salt="s",
            metrics=[{"key": "errors", "kind": "error_rate"}],
            policy={"mode": "off"},
            router={"backend": "builtin"},
        )
        experiment.variants = [Variant(key="a", position=0), Variant(key="b", position=1)]
        session.add(experiment)
        session.flush()
        session.add(
            WeightEpoch(
                experiment_id=experiment.id, epoch=0, weights={"a": 1, "b": 1}, started_at=T0
            )
        )
        vid = {v.key: v.id for v in experiment.variants}
        session.execute(
            insert(Prediction),
            [
                {
                    "experiment_id": experiment.id,
                    "variant_id": vid["ab"[i % 2]],
                    "unit_id": f"u{i}",
                    "ts": T0 + timedelta(minutes=i),
                    "message_id": f"m{i}",
                    "error": False,
                }
                for i in range(30)
            ],
        )
        session.commit()
    headers = {"Authorization": f"Bearer {admin}"}
    first = app_client.post("/v1/experiments/pipe/analysis", headers=headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["created"] is True and body["decisions"] == []
    assert body["snapshot"]["result"]["units"] == {"a": 15, "b": 15}
    again = app_client.post("/v1/experiments/pipe/analysis", headers=headers).json()
    assert again["created"] is False and again["snapshot"]["id"] == body["snapshot"]["id"]
    forbidden = app_client.post(
        "/v1/experiments/pipe/analysis", headers={"Authorization": f"Bearer {read}"}
    )
    assert forbidden.status_code == 403
    unknown = app_client.post("/v1/experiments/nope/analysis", headers=headers)
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
