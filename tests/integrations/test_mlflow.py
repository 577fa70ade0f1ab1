"""MLflow Model Registry: a promoted variant's registered model gets the alias, the others the
verdict, and every analysis is logged to a run of the experiment, against a live MLflow server."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from abstats.control.outbox import deliver_pending
from abstats.db.models import OutboxItem
from abstats.integrations.mlflow import ModelRef, parse_model_uri
from abstats.keys import create_key


@pytest.fixture
def api(committed_engine: Engine) -> Iterator[tuple[TestClient, dict[str, str]]]:
    from abstats.api.app import create_app

    with Session(committed_engine) as session:
        admin = {"Authorization": f"Bearer {create_key(session, scope='admin', name='t').secret}"}
        session.commit()
    with TestClient(create_app()) as client:
        yield client, admin


def register_models(client: MlflowClient, name: str) -> dict[str, Any]:
    """Two trained versions of one model, version 2 under the alias 'challenger'."""
    experiment_id = client.create_experiment(f"train-{name}")
    runs = [client.create_run(experiment_id).info.run_id for _ in range(2)]
    client.create_registered_model(name)
    versions = [
        client.create_model_version(name, source=f"runs:/{run}/model", run_id=run).version
        for run in runs
    ]
    client.set_registered_model_alias(name, "challenger", versions[1])
    return {"runs": runs, "versions": [str(v) for v in versions]}


def traffic(units: int) -> list[dict[str, Any]]:
    rng = random.Random(3)
    events: list[dict[str, Any]] = []
    for i in range(units):
        variant = "v1" if i % 2 == 0 else "v2"
        events.append(
            {"type": "exposure", "message_id": f"e{i}", "experiment": "churn",
             "variant": variant, "unit_id": f"u{i}"}
        )  # fmt: skip
        if rng.random() < (0.10 if variant == "v1" else 0.45):
            events.append(
                {"type": "outcome", "message_id": f"o{i}", "experiment": "churn",
                 "unit_id": f"u{i}", "name": "converted", "value": 1}
            )  # fmt: skip
    return events


def test_model_uri_forms() -> None:
    assert parse_model_uri("models:/churn/3") == ModelRef("churn", "3", None)
    assert parse_model_uri("models:/churn@challenger") == ModelRef("churn", None, "challenger")
    assert parse_model_uri("xgb-1.0") is None
    assert parse_model_uri("models:/churn") is None


def test_promotion_sets_the_alias_and_logs_the_results(
    mlflow_server: str, api: tuple[TestClient, dict[str, str]], committed_engine: Engine
) -> None:
    client, admin = api
    registry = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    name = f"churn-{uuid.uuid4().hex[:8]}"
    models = register_models(registry, name)
    body = {
        "key": "churn",
        "name": "Churn",
        "control": "v1",
        "variants": [
            {"key": "v1", "model_version": f"models:/{name}/1"},
            {"key": "v2", "model_version": f"models:/{name}@challenger"},
        ],
        "metrics": [
            {"key": "conversion", "kind": "proportion", "outcome": "converted",
             "role": "primary", "direction": "increase"}
        ],
        "policy": {"ramp": None, "min_units_per_variant": 100, "min_events_per_variant": 10,
                   "min_runtime": 0, "inference": "fixed", "max_units_per_variant": 600},
        "integrations": {
            "mlflow": {"tracking_uri": mlflow_server, "promote_alias": "champion",
                       "log_analyses": True}
        },
    }  # fmt: skip
    r = client.post("/v1/experiments", json=body, headers=admin)
    assert r.status_code == 201, r.text
    assert client.post("/v1/experiments/churn/start", headers=admin).status_code == 200
    assert deliver_pending(committed_engine) >= 1  # the start's mlflow item: resolve the models
    variants = {
        v["key"]: v for v in client.get("/v1/experiments/churn", headers=admin).json()["variants"]
    }
    assert variants["v1"]["metadata"]["mlflow"]["version"] == models["versions"][0]
    # the alias resolved to the exact version and its training run, recorded at start
    assert variants["v2"]["metadata"]["mlflow"]["version"] == models["versions"][1]
    assert variants["v2"]["metadata"]["mlflow"]["run_id"] == models["runs"][1]

    r = client.post("/v1/events", json={"events": traffic(1200)}, headers=admin)
    assert r.status_code == 200 and r.json()["rejected"] == [], r.text
    analysed = client.post("/v1/experiments/churn/analysis", headers=admin)
    assert analysed.status_code == 200, analysed.text
    actions = [d["action"] for d in analysed.json()["decisions"]]
    assert actions == ["promote"], analysed.json()["snapshot"]["result"]["reason"]
    experiment = client.get("/v1/experiments/churn", headers=admin).json()
    assert experiment["status"] == "concluded" and experiment["winner"] == "v2"

    deliver_pending(committed_engine)  # after the commit: registry calls, analysis log
    with Session(committed_engine) as session:
        items = session.scalars(select(OutboxItem).where(OutboxItem.kind == "mlflow")).all()
        assert [(i.payload["op"], i.done_at is not None, i.last_error) for i in items] == [
            ("resolve", True, None),
            ("verdict", True, None),
            ("log_analysis", True, None),
        ]

    champion = registry.get_model_version_by_alias(name, "champion")
    assert champion.version == models["versions"][1] and champion.run_id == models["runs"][1]
    winner = registry.get_model_version(name, models["versions"][1]).tags
    loser = registry.get_model_version(name, models["versions"][0]).tags
    assert winner["abstats.verdict"] == "winner" and loser["abstats.verdict"] == "loser"
    assert loser["abstats.experiment"] == "churn" and "promote v2" in loser["abstats.reason"]

    mlflow_experiment = registry.get_experiment_by_name("abstats/churn")
    assert mlflow_experiment is not None
    runs = registry.search_runs([mlflow_experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0].data
    assert run.tags["abstats.experiment"] == "churn"
    assert run.tags["abstats.decision"] == "promote" and run.tags["abstats.winner"] == "v2"
    effect = run.metrics["conversion.v2.effect"]
    assert run.metrics["conversion.v2.ci_lower"] <= effect <= run.metrics["conversion.v2.ci_upper"]
    assert effect > 1  # 45% against 10%: a relative lift above +100%
    assert run.metrics["conversion.v2.p_value_adjusted"] < 0.05
    assert 0 <= run.metrics["srm.p_value"] <= 1
    assert run.metrics["units.v1"] == 600
    assert run.params["model.v2"] == f"{name}/{models['versions'][1]}"


def test_registry_failure_is_retried_and_never_blocks_the_decision(
    api: tuple[TestClient, dict[str, str]], committed_engine: Engine
) -> None:
    """An unreachable server: the start is committed; the mlflow item keeps the error and a
    later attempt."""
    client, admin = api
    body = {
        "key": "churn",
        "name": "Churn",
        "control": "v1",
        "variants": [{"key": "v1", "model_version": "models:/x/1"}, {"key": "v2"}],
        "metrics": [{"key": "errors", "kind": "error_rate", "role": "primary"}],
        "integrations": {"mlflow": {"tracking_uri": "http://127.0.0.1:9", "promote_alias": "c"}},
    }
    assert client.post("/v1/experiments", json=body, headers=admin).status_code == 201
    assert client.post("/v1/experiments/churn/start", headers=admin).status_code == 200
    deliver_pending(committed_engine, backoff_base=60)
    with Session(committed_engine) as session:
        item = session.scalars(select(OutboxItem).where(OutboxItem.kind == "mlflow")).one()
        assert item.done_at is None and item.attempts == 1
        assert item.last_error and "127.0.0.1" in item.last_error
    assert client.get("/v1/experiments/churn", headers=admin).json()["status"] == "running"
