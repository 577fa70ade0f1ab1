"""A running experiment with a real analysis snapshot, and the ``/metrics`` text it produces.

Everything goes through the API on committed data (the collector reads with its own connections,
as it does in production): create, start, post events, analyse, scrape."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from abstats.keys import create_key

EXPERIMENT = {
    "key": "churn",
    "name": "Churn model v2",
    "control": "v1",
    "variants": [
        {"key": "v1", "model_version": "xgb-1.0"},
        {"key": "v2", "model_version": "xgb-2.0"},
    ],
    "metrics": [
        {
            "key": "conversion",
            "kind": "proportion",
            "outcome": "converted",
            "role": "primary",
            "direction": "increase",
        },
        {
            "key": "latency_p95",
            "kind": "latency",
            "statistic": "p95",
            "role": "guardrail",
            "margin": "10%",
        },
    ],
    "policy": {"ramp": None},
}


@dataclass
class Running:
    client: TestClient
    admin: dict[str, str]
    ingest: dict[str, str]

    def scrape(self) -> str:
        response = self.client.get("/metrics")
        assert response.status_code == 200, response.text
        return response.text


def post_events(client: TestClient, headers: dict[str, str], events: list[dict[str, Any]]) -> None:
    response = client.post("/v1/events", json={"events": events}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == []


def traffic(experiment: str, units: int, *, seed: int = 7) -> list[dict[str, Any]]:
    """Exposures, predictions with latency and conversions for ``units`` units (50/50)."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for i in range(units):
        variant = "v1" if i % 2 == 0 else "v2"
        unit = f"u{i}"
        events.append(
            {
                "type": "exposure",
                "message_id": f"e{i}",
                "experiment": experiment,
                "variant": variant,
                "unit_id": unit,
            }
        )
        events.append(
            {
                "type": "prediction",
                "message_id": f"p{i}",
                "experiment": experiment,
                "variant": variant,
                "unit_id": unit,
                "score": rng.random(),
                "latency_ms": rng.uniform(10, 30),
            }
        )
        if rng.random() < (0.2 if variant == "v1" else 0.4):
            events.append(
                {
                    "type": "outcome",
                    "message_id": f"o{i}",
                    "experiment": experiment,
                    "unit_id": unit,
                    "name": "converted",
                    "value": 1,
                }
            )
    return events


@pytest.fixture
def running(committed_engine: Engine) -> Iterator[Running]:
    from abstats.api.app import create_app

    with Session(committed_engine) as session:
        admin = {"Authorization": f"Bearer {create_key(session, scope='admin', name='t').secret}"}
        ingest = {"Authorization": f"Bearer {create_key(session, scope='ingest', name='t').secret}"}
        session.commit()
    with TestClient(create_app()) as client:
        created = client.post("/v1/experiments", json=EXPERIMENT, headers=admin)
        assert created.status_code == 201, created.text
        started = client.post("/v1/experiments/churn/start", headers=admin)
        assert started.status_code == 200, started.text
        post_events(client, ingest, traffic("churn", 400))
        analysed = client.post("/v1/experiments/churn/analysis", headers=admin)
        assert analysed.status_code == 200, analysed.text
        assert analysed.json()["created"] is True
        yield Running(client, admin, ingest)
