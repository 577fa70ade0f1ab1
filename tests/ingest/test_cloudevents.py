"""POST /v1/cloudevents: KServe inference-logger events become predictions of the mapped variants.

The events are built as the KServe logger sends them (binary mode: its ``Ce-*`` headers, the
extensions inferenceservicename, namespace, component, endpoint and metadata, the request or
response body as data; request and response share the ce-id) and, for structured mode and
batches, with the CloudEvents SDK's own encoder."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings.http import to_structured_event
from cloudevents.core.v1.event import CloudEvent
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from abstats.db.models import CloudEventPair, Experiment, Prediction, Variant
from abstats.ingest.cloudevents import prune_pairs
from tests.ingest.conftest import EXPERIMENT as INGEST_EXPERIMENT

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)

EXPERIMENT = {
    **INGEST_EXPERIMENT,
    "integrations": {
        "cloudevents": {
            "sources": [
                {"inferenceservice": "churn-model", "endpoint": "default", "variant": "v1"},
                {"inferenceservice": "churn-model", "endpoint": "canary", "variant": "v2"},
            ],
            "unit_header": "X-User-Id",
        }
    },
}


def rfc3339(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def binary(
    kind: str, event_id: str, at: datetime, data: dict[str, Any], *, endpoint: str, user: str
) -> tuple[dict[str, str], bytes]:
    """Headers and body of one event as the KServe agent's logger posts it (binary mode)."""
    headers = {
        "Ce-Id": event_id,
        "Ce-Specversion": "1.0",
        "Ce-Type": kind,
        "Ce-Source": "http://localhost:9081/",
        "Ce-Time": rfc3339(at),
        "Content-Type": "application/json",
        "Ce-Inferenceservicename": "churn-model",
        "Ce-Namespace": "default",
        "Ce-Component": "predictor",
        "Ce-Endpoint": endpoint,
        "Ce-Metadata": orjson.dumps({"X-User-Id": [user]}).decode(),
        "Traceparent": "00-90bdf848647d50283394155d2df58f19-84dacdfdf07cadfc-00",
    }
    return headers, orjson.dumps(data)


def structured(
    kind: str, event_id: str, at: datetime, data: dict[str, Any], *, endpoint: str, user: str
) -> CloudEvent:
    return CloudEvent(
        {
            "id": event_id,
            "specversion": "1.0",
            "type": kind,
            "source": "http://localhost:9081/",
            "time": at,
            "datacontenttype": "application/json",
            "inferenceservicename": "churn-model",
            "namespace": "default",
            "component": "predictor",
            "endpoint": endpoint,
            "metadata": orjson.dumps({"x-user-id": [user]}).decode(),
        },
        data,
    )


@pytest.fixture
def churn(client: TestClient, admin_headers: dict[str, str]) -> None:
    r = client.post("/v1/experiments", json=EXPERIMENT, headers=admin_headers)
    assert r.status_code == 201, r.text
    assert r.json()["integrations"]["cloudevents"]["sources"][1]["variant"] == "v2"
    assert client.post("/v1/experiments/churn/start", headers=admin_headers).status_code == 200


def predictions(session: Session) -> dict[str, dict[str, Any]]:
    rows = session.execute(
        select(Prediction, Variant.key)
        .join(Variant, Variant.id == Prediction.variant_id)
        .join(Experiment, Experiment.id == Prediction.experiment_id)
        .where(Experiment.key == "churn")
    ).all()
    return {
        p.message_id: {
            "variant": variant,
            "unit": p.unit_id,
            "request_id": p.request_id,
            "score": p.score,
            "latency_ms": p.latency_ms,
            "ts": p.ts,
            "error": p.error,
        }
        for p, variant in rows
    }


def test_two_endpoints_stored_once_as_predictions_also_on_resend(
    client: TestClient, ingest_headers: dict[str, str], db_session: Session, churn: None
) -> None:
    sent: list[tuple[dict[str, str], bytes]] = []
    expected: dict[str, dict[str, Any]] = {}
    for i in range(6):
        endpoint = "default" if i % 2 == 0 else "canary"
        event_id = f"0009174a-24a8-4603-b098-09c8799950{i:02d}"
        at = T0 + timedelta(seconds=i)
        score = 0.1 * (i + 1)
        request = binary(
            REQUEST,
            event_id,
            at,
            {"instances": [[6.8, 2.8, 4.8, 1.4]]},
            endpoint=endpoint,
            user=f"u{i}",
        )
        response = binary(
            RESPONSE, event_id, at + timedelta(milliseconds=20 + i),
            {"predictions": [score]}, endpoint=endpoint, user=f"u{i}",
        )  # fmt: skip
        halves = [response, request] if i == 3 else [request, response]  # any order pairs
        for headers, body in halves:
            r = client.post("/v1/cloudevents", content=body, headers={**ingest_headers, **headers})
            assert r.status_code == 200, r.text
            sent.append((headers, body))
        assert r.json() == {"accepted": 1, "duplicates": 0, "pending": 0}
        expected[f"ce:{event_id}"] = {
            "variant": "v1" if endpoint == "default" else "v2",
            "unit": f"u{i}",
            "request_id": event_id,
            "score": pytest.approx(score),
            "latency_ms": pytest.approx(20 + i),
            "ts": at,
            "error": False,
        }
    assert predictions(db_session) == expected

    # only halves in flight are kept
    assert db_session.scalar(select(func.count()).select_from(CloudEventPair)) == 0
    for n, (headers, body) in enumerate(sent):  # the logger retries everything: stored once
        r = client.post("/v1/cloudevents", content=body, headers={**ingest_headers, **headers})
        assert r.status_code == 200, r.text
        first_half = n % 2 == 0
        assert r.json() == (
            {"accepted": 0, "duplicates": 0, "pending": 1}
            if first_half
            else {"accepted": 0, "duplicates": 1, "pending": 0}
        )
    assert predictions(db_session) == expected
    # a half resent alone waits, and is pruned once it is older than a day
    headers, body = sent[0]
    client.post("/v1/cloudevents", content=body, headers={**ingest_headers, **headers})
    assert db_session.scalar(select(func.count()).select_from(CloudEventPair)) == 1
    connection = db_session.connection()
    assert prune_pairs(connection) == 0
    assert prune_pairs(connection, now=datetime.now(UTC) + timedelta(hours=25)) == 1
    assert predictions(db_session) == expected


def test_first_half_is_pending_until_the_second_arrives(
    client: TestClient, ingest_headers: dict[str, str], db_session: Session, churn: None
) -> None:
    headers, body = binary(REQUEST, "r-1", T0, {"instances": [[1]]}, endpoint="canary", user="u9")
    r = client.post("/v1/cloudevents", content=body, headers={**ingest_headers, **headers})
    assert r.json() == {"accepted": 0, "duplicates": 0, "pending": 1}
    assert predictions(db_session) == {}
    # V2 (Open Inference Protocol) response: the score is found at /outputs/0/data/0
    v2 = {
        "model_name": "churn",
        "outputs": [{"name": "p", "datatype": "FP32", "shape": [1], "data": [0.75]}],
    }
    headers, body = binary(
        RESPONSE, "r-1", T0 + timedelta(milliseconds=8), v2, endpoint="canary", user="u9"
    )
    r = client.post("/v1/cloudevents", content=body, headers={**ingest_headers, **headers})
    assert r.json() == {"accepted": 1, "duplicates": 0, "pending": 0}
    stored = predictions(db_session)["ce:r-1"]
    assert stored["variant"] == "v2" and stored["score"] == 0.75
    assert stored["latency_ms"] == pytest.approx(8)


def test_structured_mode_and_batches(
    client: TestClient, ingest_headers: dict[str, str], db_session: Session, churn: None
) -> None:
    at = T0 + timedelta(seconds=30)
    request = to_structured_event(
        structured(REQUEST, "s-1", at, {"instances": [[1, 2]]}, endpoint="default", user="a")
    )
    r = client.post(
        "/v1/cloudevents", content=request.body, headers={**ingest_headers, **request.headers}
    )
    assert r.status_code == 200, r.text
    assert request.headers["content-type"] == "application/cloudevents+json"
    response = to_structured_event(
        structured(RESPONSE, "s-1", at + timedelta(milliseconds=5), {"predictions": [[0.3, 0.7]]},
                   endpoint="default", user="a")
    )  # fmt: skip
    r = client.post(
        "/v1/cloudevents", content=response.body, headers={**ingest_headers, **response.headers}
    )
    assert r.json() == {"accepted": 1, "duplicates": 0, "pending": 0}
    # a batch of both halves of another inference (structured JSON objects in an array)
    batch = [
        orjson.loads(to_structured_event(e).body)
        for e in (
            structured(REQUEST, "s-2", at, {"instances": [[3]]}, endpoint="canary", user="b"),
            structured(RESPONSE, "s-2", at + timedelta(milliseconds=9), {"predictions": [0.2]},
                       endpoint="canary", user="b"),
        )
    ]  # fmt: skip
    r = client.post(
        "/v1/cloudevents",
        content=orjson.dumps(batch),
        headers={**ingest_headers, "Content-Type": "application/cloudevents-batch+json"},
    )
    assert r.json() == {"accepted": 1, "duplicates": 0, "pending": 1}
    stored = predictions(db_session)
    # class probabilities: the positive (last) class is the score
    assert stored["ce:s-1"]["score"] == pytest.approx(0.7)
    assert stored["ce:s-1"]["variant"] == "v1" and stored["ce:s-1"]["unit"] == "a"
    assert stored["ce:s-2"]["variant"] == "v2" and stored["ce:s-2"]["latency_ms"] == pytest.approx(
        9
    )


def test_basic_auth_with_the_key_as_password(
    client: TestClient, ingest_headers: dict[str, str], churn: None
) -> None:
    """KServe's logger takes no headers, only a URL: http://abstats:KEY@host/v1/cloudevents."""
    key = ingest_headers["Authorization"].removeprefix("Bearer ")
    basic = {"Authorization": "Basic " + base64.b64encode(f"abstats:{key}".encode()).decode()}
    headers, body = binary(REQUEST, "b-1", T0, {"instances": [[1]]}, endpoint="default", user="u")
    assert (
        client.post("/v1/cloudevents", content=body, headers={**basic, **headers}).status_code
        == 200
    )
    wrong = {"Authorization": "Basic " + base64.b64encode(b"abstats:nope").decode()}
    r = client.post("/v1/cloudevents", content=body, headers={**wrong, **headers})
    assert r.status_code == 401
    r = client.post("/v1/cloudevents", content=body, headers=headers)
    assert r.status_code == 401


def test_bad_events_are_refused_with_what_to_fix(
    client: TestClient, ingest_headers: dict[str, str], db_session: Session, churn: None
) -> None:
    def post(headers: dict[str, str], body: bytes) -> tuple[int, str]:
        r = client.post("/v1/cloudevents", content=body, headers={**ingest_headers, **headers})
        assert r.headers["content-type"].startswith("application/problem+json"), r.text
        return r.status_code, r.json()["detail"]

    headers, body = binary(REQUEST, "x-1", T0, {"instances": [[1]]}, endpoint="shadow", user="u")
    status, detail = post(headers, body)
    assert status == 422 and "No running or paused experiment maps this endpoint" in detail
    assert "endpoint='shadow'" in detail

    headers, body = binary("com.example.other", "x-2", T0, {}, endpoint="default", user="u")
    status, detail = post(headers, body)
    assert status == 422 and "not an inference event" in detail

    status, detail = post({"Content-Type": "application/json"}, b'{"instances": [[1]]}')
    assert status == 400 and "not a CloudEvent" in detail and "ce-id" in detail

    headers, body = binary(REQUEST, "x-3", T0, {}, endpoint="default", user="u")
    del headers["Ce-Source"]
    status, detail = post(headers, body)
    assert status == 400 and "source" in detail

    for content_type, hostile in (
        ("application/cloudevents+json", b"[1, 2]"),
        (
            "application/cloudevents+json",
            b'{"id": 7, "type": "t", "source": "s", "specversion": "1.0"}',
        ),
        ("application/cloudevents+json", b"not json"),
        ("application/cloudevents-batch+json", b'{"id": "x"}'),
        ("application/cloudevents-batch+json", b"[[1], null]"),
    ):
        status, detail = post({"Content-Type": content_type}, hostile)
        assert status == 400 and ("CloudEvent" in detail or "JSON" in detail), (hostile, detail)

    headers, body = binary(REQUEST, "x-4", T0, {}, endpoint="default", user="u")
    headers["Ce-Metadata"] = "{}"
    status, detail = post(headers, body)
    assert status == 422 and "X-User-Id" in detail and "metadataHeaders" in detail
    assert predictions(db_session) == {}


def test_integrations_are_validated(client: TestClient, admin_headers: dict[str, str]) -> None:
    body = {
        **EXPERIMENT,
        "key": "bad",
        "integrations": {
            "cloudevents": {
                "sources": [{"endpoint": "canary", "variant": "v3"}, {"variant": "v1"}]
            },
            "mlflow": {"promote_alias": "champion!"},
        },
    }
    r = client.post("/v1/experiments", json=body, headers=admin_headers)
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert "integrations.cloudevents.sources[1]" in fields
    assert "integrations.mlflow.promote_alias" in fields
    body["integrations"] = {"cloudevents": {"sources": [{"endpoint": "canary", "variant": "v3"}]}}
    r = client.post("/v1/experiments", json=body, headers=admin_headers)
    assert r.status_code == 422
    assert r.json()["errors"] == [
        {
            "field": "integrations.cloudevents.sources[0].variant",
            "message": "'v3' is not one of the variants (v1, v2)",
        }
    ]
