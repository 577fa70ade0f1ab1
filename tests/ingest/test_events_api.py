"""POST /v1/events through HTTP against the real database: every rule of docs/events.md."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from abstats.config import get_settings
from abstats.db.models import Exposure, Outcome, Prediction


def mid() -> str:
    return uuid.uuid4().hex


def prediction(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "prediction",
        "message_id": mid(),
        "experiment": "churn",
        "variant": "v2",
        "unit_id": "c-1",
        "request_id": "r-9",
        "timestamp": "2026-11-22T10:00:00Z",
        "score": 0.83,
        "label": None,
        "value": None,
        "latency_ms": 12.5,
        "error": False,
        "features": {"tenure": 12, "plan": "gold"},
    }
    event.update(overrides)
    return event


def exposure(**overrides: Any) -> dict[str, Any]:
    event = {
        "type": "exposure",
        "message_id": mid(),
        "experiment": "churn",
        "variant": "v2",
        "unit_id": "c-1",
        "timestamp": "2026-11-22T10:00:00Z",
    }
    event.update(overrides)
    return event


def outcome(**overrides: Any) -> dict[str, Any]:
    event = {
        "type": "outcome",
        "message_id": mid(),
        "experiment": "churn",
        "unit_id": "c-1",
        "request_id": "r-9",
        "timestamp": "2026-11-22T11:00:00Z",
        "name": "churned",
        "value": 1,
    }
    event.update(overrides)
    return event


def count(session: Session, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Change ingestion limits through the environment, as an operator would."""
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def test_mixed_batch_is_stored_with_resolved_ids(
    client: TestClient,
    ingest_headers: dict[str, str],
    experiment: dict[str, Any],
    db_session: Session,
) -> None:
    events = [exposure(), prediction(), outcome()]
    r = client.post("/v1/events", json={"events": events}, headers=ingest_headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    variant_id = db_session.scalar(text("SELECT id FROM variant WHERE key = 'v2'"))
    p = db_session.scalars(select(Prediction)).one()
    assert (p.variant_id, p.unit_id, p.request_id, p.score, p.label, p.latency_ms, p.error) == (
        variant_id,
        "c-1",
        "r-9",
        0.83,
        None,
        12.5,
        False,
    )
    assert p.features == {"tenure": 12, "plan": "gold"}
    assert p.ts == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert p.message_id == events[1]["message_id"]
    e = db_session.scalars(select(Exposure)).one()
    assert (e.variant_id, e.source) == (variant_id, "api")
    o = db_session.scalars(select(Outcome)).one()
    assert (o.name, o.value, o.request_id) == ("churned", 1.0, "r-9")


def test_timestamps_iso_naive_epoch_and_default(
    client: TestClient,
    ingest_headers: dict[str, str],
    experiment: dict[str, Any],
    db_session: Session,
) -> None:
    before = datetime.now(UTC)
    events = [
        prediction(message_id="a", timestamp="2026-11-22T12:00:00+02:00"),
        prediction(message_id="b", timestamp="2026-11-22T10:00:00"),  # no offset: UTC
        prediction(message_id="c", timestamp=1_795_000_000),
        prediction(message_id="d", timestamp=None),  # absent: server time
        prediction(message_id="e", timestamp="1999-12-31T23:00:00-02:00"),  # = 2000-01-01T01:00Z
    ]
    r = client.post("/v1/events", json={"events": events}, headers=ingest_headers)
    assert r.json()["accepted"] == 5, r.text
    ts = dict(db_session.execute(select(Prediction.message_id, Prediction.ts)).tuples().all())
    assert ts["a"] == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert ts["b"] == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert ts["c"] == datetime.fromtimestamp(1_795_000_000, UTC)
    assert before <= ts["d"] <= datetime.now(UTC)
    assert ts["e"] == datetime(2000, 1, 1, 1, tzinfo=UTC)


FUTURE = (datetime.now(UTC) + timedelta(hours=25)).isoformat()

REJECTIONS: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "unknown experiment",
        prediction(experiment="nope"),
        "experiment",
        "unknown experiment 'nope'; create it with POST /v1/experiments",
    ),
    (
        "unknown variant",
        prediction(variant="v9"),
        "variant",
        "unknown variant 'v9' of experiment 'churn'; known: v1, v2",
    ),
    ("unknown variant on exposure", exposure(variant="v9"), "variant", "unknown variant 'v9'"),
    (
        "score is a string",
        prediction(score="0.8"),
        "score",
        "must be a number, got a string ('0.8')",
    ),
    ("score is a boolean", prediction(score=True), "score", "must be a number, got a boolean"),
    ("error is a string", prediction(error="yes"), "error", "must be true or false"),
    ("unit_id is an array", prediction(unit_id=["a"]), "unit_id", "must be a string, got an array"),
    ("experiment is a number", prediction(experiment=3), "experiment", "must be a string"),
    ("negative latency", prediction(latency_ms=-1.5), "latency_ms", "must be >= 0, got -1.5"),
    (
        "timestamp > 24 h ahead",
        prediction(timestamp=FUTURE),
        "timestamp",
        "is more than 24 h in the future",
    ),
    (
        "timestamp before 2000",
        prediction(timestamp="1999-12-31T23:59:59Z"),
        "timestamp",
        "is before 2000-01-01",
    ),
    (
        "timestamp not a date",
        prediction(timestamp="yesterday"),
        "timestamp",
        "'yesterday' is not a timestamp: use ISO 8601",
    ),
    (
        "timestamp is an object",
        prediction(timestamp={"s": 1}),
        "timestamp",
        "must be an ISO 8601 string or Unix seconds",
    ),
    ("missing message_id", prediction(message_id=None), "message_id", "is required"),
    ("empty message_id", prediction(message_id=""), "message_id", "must be a non-empty string"),
    ("missing unit_id", exposure(unit_id=None), "unit_id", "is required"),
    ("missing experiment", outcome(experiment=None), "experiment", "is required"),
    ("missing variant", prediction(variant=None), "variant", "is required: the variant key"),
    ("missing type", {k: v for k, v in prediction().items() if k != "type"}, "type", "is required"),
    ("bad type", prediction(type="click"), "type", "must be exposure, prediction or outcome"),
    ("id too long", prediction(request_id="r" * 300), "request_id", "at most 256"),
    ("NUL in id", prediction(unit_id="a\x00b"), "unit_id", "must not contain NUL"),
    (
        "oversize feature map",
        prediction(features={f"f{i}": i for i in range(201)}),
        "features",
        "has 201 entries; at most 200",
    ),
    (
        "nested feature",
        prediction(features={"geo": {"lat": 1}}),
        "features.geo",
        "must be a number or a string, got an object (features are flat)",
    ),
    (
        "boolean feature",
        prediction(features={"vip": True}),
        "features.vip",
        "must be a number or a string, got a boolean",
    ),
    (
        "long feature string",
        prediction(features={"bio": "x" * 300}),
        "features.bio",
        "at most 256 characters",
    ),
    ("features not an object", prediction(features=[1, 2]), "features", "must be an object"),
    (
        "unknown field (typo)",
        prediction(latency=3),
        "latency",
        "unknown field for a prediction; did you mean 'latency_ms'?",
    ),
    (
        "outcome with variant",
        outcome(variant="v2"),
        "variant",
        "outcomes are not tied to a variant",
    ),
    ("outcome without name", outcome(name=None), "name", "is required"),
    ("outcome bad name", outcome(name="has space"), "name", "is not an outcome name"),
    ("outcome without value", outcome(value=None), "value", "is required: a number"),
    ("outcome value string", outcome(value="1"), "value", "must be a number"),
]


@pytest.mark.parametrize(
    ("case", "bad", "field", "message"), REJECTIONS, ids=[r[0] for r in REJECTIONS]
)
def test_each_rejection_rule_has_field_path_and_message(
    client: TestClient,
    ingest_headers: dict[str, str],
    experiment: dict[str, Any],
    db_session: Session,
    case: str,
    bad: dict[str, Any],
    field: str,
    message: str,
) -> None:
    good = prediction()
    r = client.post("/v1/events", json={"events": [good, bad]}, headers=ingest_headers)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 1 and out["duplicates"] == 0
    rejected = out["rejected"]
    assert rejected, case
    assert all(x["index"] == 1 for x in rejected)
    match = [x for x in rejected if x["field"] == f"events[1].{field}"]
    assert match, rejected
    assert message in match[0]["message"], match[0]["message"]
    expected_id = bad.get("message_id") if isinstance(bad.get("message_id"), str) else None
    assert match[0]["message_id"] == expected_id
    assert count(db_session, Prediction) == 1  # the valid event is stored


@pytest.mark.parametrize(
    ("literal", "shown"),
    [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf"), ("1e999", "inf")],
)
def test_non_finite_numbers_are_rejected_per_field(
    client: TestClient,
    ingest_headers: dict[str, str],
    experiment: dict[str, Any],
    db_session: Session,
    literal: str,
    shown: str,
) -> None:
    good = orjson.dumps(prediction()).decode()
    bad = (
        orjson.dumps(prediction(message_id="m-nan"))
        .decode()
        .replace('"score":0.83', f'"score":{literal}')
    )
    body = '{"events": [' + good + "," + bad + "]}"
    r = client.post(
        "/v1/events", content=body, headers={**ingest_headers, "content-type": "application/json"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    assert r.json()["rejected"] == [
        {
            "index": 1,
            "message_id": "m-nan",
            "field": "events[1].score",
            "message": f"must be a finite number, got {shown}",
        }
    ]


def test_every_problem_of_an_event_is_listed(
    client: TestClient, ingest_headers: dict[str, str], experiment: dict[str, Any]
) -> None:
    bad = prediction(latency_ms=-1, score="x", variant="v9")
    r = client.post("/v1/events", json={"events": [bad]}, headers=ingest_headers)
    fields = sorted(x["field"] for x in r.json()["rejected"])
    assert fields == ["events[0].latency_ms", "events[0].score", "events[0].variant"]


def test_non_object_event_is_rejected(
    client: TestClient, ingest_headers: dict[str, str], experiment: dict[str, Any]
) -> None:
    r = client.post("/v1/events", json={"events": [prediction(), 42]}, headers=ingest_headers)
    assert r.json()["rejected"] == [
        {
            "index": 1,
            "message_id": None,
            "field": "events[1]",
            "message": "each event must be a JSON object, got a number (42)",
        }
    ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "The body is empty"),
        (b"{not json", "The body is not valid JSON"),
        (b"[1, 2]", 'must be a JSON object {"events": [...]}'),
        (b'{"data": []}', "an object without 'events'"),
        (b'{"events": {"a": 1}}', "'events' must be an array"),
        (b'{"events": [], "sent_at": 1}', "Unknown top-level field(s) sent_at"),
    ],
)
def test_envelope_errors_are_400(
    client: TestClient, ingest_headers: dict[str, str], raw: bytes, message: str
) -> None:
    r = client.post(
        "/v1/events", content=raw, headers={**ingest_headers, "content-type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert message in r.json()["detail"]


def test_batch_limit_is_413(
    client: TestClient,
    ingest_headers: dict[str, str],
    experiment: dict[str, Any],
    db_session: Session,
    limits: pytest.MonkeyPatch,
) -> None:
    limits.setenv("ABSTATS_MAX_BATCH_EVENTS", "3")
    get_settings.cache_clear()
    r = client.post(
        "/v1/events", json={"events": [prediction() for _ in range(4)]}, headers=ingest_headers
    )
    assert r.status_code == 413
    assert r.json()["detail"] == (
        "The batch has 4 events; at most 3 per request (ABSTATS_MAX_BATCH_EVENTS). "
        "Split it into smaller batches."
    )
    ndjson = b"\n".join(orjson.dumps(prediction()) for _ in range(4))
    r = client.post(
        "/v1/events",
        content=ndjson,
        headers={**ingest_headers, "content-type": "application/x-ndjson"},
    )
    assert r.status_code == 413
    r = client.post(
        "/v1/events", json={"events": [prediction() for _ in range(3)]}, headers=ingest_headers
    )
    assert r.status_code == 200 and r.json()["accepted"] == 3
    assert count(db_session, Prediction) == 3


def test_body_limit_is_413_while_streaming(
    client: TestClient,
    ingest_headers: dict[str, str],
    experiment: dict[str, Any],
    limits: pytest.MonkeyPatch,
) -> None:
    limits.setenv("ABSTATS_MAX_BODY_BYTES", "4096")
    get_settings.cache_clear()
    body = orjson.dumps({"events": [prediction() for _ in range(40)]})
    assert len(body) > 4096
    # declared length over the limit: refused before reading
    r = client.post(
        "/v1/events", content=body, headers={**ingest_headers, "content-type": "application/json"}
    )
    assert r.status_code == 413
    assert "larger than 4096 bytes (ABSTATS_MAX_BODY_BYTES)" in r.json()["detail"]
    # chunked (no Content-Length): refused once the stream passes the limit; the rest is not read
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 1000):
            sent.append(i)
            yield body[i : i + 1000]

    r = client.post(
        "/v1/events",
        content=chunks(),
        headers={**ingest_headers, "content-type": "application/json"},
    )
    assert r.status_code == 413
    # a gzip body small on the wire but over the limit once inflated
    bomb = gzip.compress(b'{"events": [' + b" " * 100_000 + b"]}")
    assert len(bomb) < 4096
    r = client.post(
        "/v1/events",
        content=bomb,
        headers={**ingest_headers, "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert r.status_code == 413
    assert "once decompressed" in r.json()["detail"]


def test_ndjson_and_gzip(
    client: TestClient,
    ingest_headers: dict[str, str],
    experiment: dict[str, Any],
    db_session: Session,
) -> None:
    lines = [orjson.dumps(e) for e in (exposure(), prediction(), outcome())]
    body = b"\n".join([*lines[:2], b"", b"{broken", lines[2]]) + b"\n"
    r = client.post(
        "/v1/events",
        content=gzip.compress(body),
        headers={
            **ingest_headers,
            "content-type": "application/x-ndjson",
            "content-encoding": "gzip",
        },
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 3
    assert len(out["rejected"]) == 1
    assert out["rejected"][0]["index"] == 2 and out["rejected"][0]["field"] == "events[2]"
    assert out["rejected"][0]["message"].startswith("line 3 is not valid JSON")
    r = client.post(
        "/v1/events",
        content=gzip.compress(orjson.dumps({"events": [prediction()]})),
        headers={**ingest_headers, "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert r.json()["accepted"] == 1
    assert count(db_session, Prediction) == 2
    r = client.post(
        "/v1/events", content=b"xx", headers={**ingest_headers, "content-encoding": "br"}
    )
    assert r.status_code == 400 and "Content-Encoding 'br' is not supported" in r.json()["detail"]
    r = client.post(
        "/v1/events", content=b"not gzip", headers={**ingest_headers, "content-encoding": "gzip"}
    )
    assert r.status_code == 400 and "not valid gzip" in r.json()["detail"]


def test_strict_mode_stores_nothing_on_one_bad_event(
    client: TestClient,
    ingest_headers: dict[str, str],
    experiment: dict[str, Any],
    db_session: Session,
) -> None:
    events = [exposure(), prediction(), prediction(latency_ms=-1, score="x"), outcome()]
    r = client.post("/v1/events?strict=true", json={"events": events}, headers=ingest_headers)
    assert r.status_code == 422
    problem = r.json()
    assert problem["detail"].startswith(
        "1 of 4 events are invalid, so nothing was stored (strict mode)"
    )
    assert {e["field"] for e in problem["errors"]} == {"events[2].latency_ms", "events[2].score"}
    assert {x["message_id"] for x in problem["rejected"]} == {events[2]["message_id"]}
    assert (
        count(db_session, Prediction) + count(db_session, Exposure) + count(db_session, Outcome)
        == 0
    )
    r = client.post(
        "/v1/events?strict=true", json={"events": [prediction()]}, headers=ingest_headers
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1


def test_resend_is_idempotent_and_duplicates_are_counted(
    client: TestClient,
    ingest_headers: dict[str, str],
    experiment: dict[str, Any],
    db_session: Session,
) -> None:
    events = [exposure(), prediction(), prediction(), outcome()]
    results = [
        client.post("/v1/events", json={"events": events}, headers=ingest_headers).json()
        for _ in range(3)
    ]
    assert results[0] == {"accepted": 4, "duplicates": 0, "rejected": []}
    assert results[1] == results[2] == {"accepted": 0, "duplicates": 4, "rejected": []}
    # the same message_id twice within one batch is stored once; message ids are per experiment
    twice = prediction()
    r = client.post("/v1/events", json={"events": [twice, dict(twice)]}, headers=ingest_headers)
    assert r.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert count(db_session, Prediction) == 3
    assert count(db_session, Exposure) == 1 and count(db_session, Outcome) == 1


def test_identity_is_the_message_id_and_the_timestamp_or_the_message_id_when_stamped(
    client: TestClient,
    ingest_headers: dict[str, str],
    experiment: dict[str, Any],
    db_session: Session,
) -> None:
    def post(events: list[dict[str, Any]]) -> Any:
        r = client.post("/v1/events", json={"events": events}, headers=ingest_headers)
        assert r.status_code == 200, r.text
        return r.json()

    dated = prediction()
    undated = {k: v for k, v in prediction().items() if k != "timestamp"}
    assert post([dated, undated]) == {"accepted": 2, "duplicates": 0, "rejected": []}
    # resent: the same instant spelled otherwise is the same event; the undated one gets another
    # server time, and its claim on the message id makes it a duplicate all the same
    respelled = {**dated, "timestamp": "2026-11-22T10:00:00+00:00"}
    assert post([respelled, undated]) == {"accepted": 0, "duplicates": 2, "rejected": []}
    assert post([undated, dated]) == {"accepted": 0, "duplicates": 2, "rejected": []}
    # a message id sent again with another timestamp is another event (docs/events.md)
    moved = {**dated, "timestamp": "2026-11-22T10:00:01Z"}
    assert post([moved]) == {"accepted": 1, "duplicates": 0, "rejected": []}
    stored = db_session.execute(
        text("SELECT message_id, count(*) FROM prediction GROUP BY 1 ORDER BY 2")
    ).all()
    assert sorted(stored) == sorted([(undated["message_id"], 1), (dated["message_id"], 2)])
    claims = db_session.execute(text("SELECT message_id FROM event_message")).scalars().all()
    assert claims == [undated["message_id"]]  # only the server-stamped event was claimed


def test_store_exposures_for_assign(
    db_session: Session, client: TestClient, experiment: dict[str, Any]
) -> None:
    from abstats.ingest.service import ExposureRecord, store_exposures

    exp_id, variant_id = db_session.execute(
        text(
            "SELECT e.id, v.id FROM experiment e JOIN variant v ON v.experiment_id = e.id "
            "WHERE e.key = 'churn' AND v.key = 'v1'"
        )
    ).one()
    now = datetime.now(UTC)
    records = [ExposureRecord(exp_id, variant_id, f"u{i}", now, f"assign-{i}") for i in range(50)]
    assert store_exposures(db_session, records) == 50
    assert store_exposures(db_session, records[:10]) == 0
    # one exposure per unit and epoch under one message id, whenever /assign logs it again
    later = [ExposureRecord(exp_id, variant_id, "u0", now + timedelta(seconds=5), "assign-0")]
    assert store_exposures(db_session, later) == 0
    sources = db_session.scalars(select(Exposure.source).distinct()).all()
    assert sources == ["assign"]
    assert count(db_session, Exposure) == 50
