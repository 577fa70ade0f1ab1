"""Issue 14, rows 4, 8, 10, 11 and 13: no batch is lost to one bad byte, every gzip member is
read, pool exhaustion is a retryable 503, a NUL anywhere is a 4xx, and admin-defined sizes are
capped."""

from __future__ import annotations

import gzip
import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from abstats import keys
from abstats.api.app import create_app
from abstats.config import get_settings
from abstats.control import service
from abstats.control.assign import AssignmentConfig
from abstats.control.exposures import ExposureLogger
from abstats.db.engine import get_engine, reset_engine
from abstats.experiments import repository
from tests.control.conftest import make_experiment
from tests.security.conftest import experiment, field_messages, problem


@pytest.fixture
def running(committed: Engine) -> Iterator[tuple[TestClient, dict[str, str], int]]:
    with Session(committed) as session, session.begin():
        make_experiment(session, "nul-exp", policy={"ramp": None})
        secret = keys.create_key(session, scope="ingest").secret
        service.start(session, "nul-exp", actor="key:test")
        experiment_id = repository.get_experiment(session, "nul-exp").id
    with TestClient(create_app()) as client:
        yield client, {"Authorization": f"Bearer {secret}"}, experiment_id


def _exposure_count(engine: Engine, experiment_id: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM exposure WHERE experiment_id = :e"), {"e": experiment_id}
            ).scalar_one()
        )


def test_assign_refuses_control_characters_and_loses_no_clean_exposure(
    running: tuple[TestClient, dict[str, str], int], committed: Engine
) -> None:
    from abstats.control.endpoints import exposure_logger

    client, headers, experiment_id = running
    for bad in ("u%00x", "u%0Ax", "u%1Bx", "u%7Fx"):
        r = client.get(f"/v1/experiments/nul-exp/assign?unit_id={bad}", headers=headers)
        body = problem(r, 422)
        assert body["errors"][0]["field"] == "unit_id", body
    for i in range(100):
        r = client.get(f"/v1/experiments/nul-exp/assign?unit_id=clean-{i}", headers=headers)
        assert r.status_code == 200
    assert exposure_logger().flush(timeout=10)
    assert _exposure_count(committed, experiment_id) == 100


def test_a_refused_record_costs_only_itself(committed: Engine) -> None:
    """Even a record the database refuses (here a NUL that slipped past the API) is isolated:
    the 100 clean exposures of its batch are stored, and the bad one can be logged again."""
    with Session(committed) as session, session.begin():
        make_experiment(session, "batchy", policy={"ramp": None})
        exp = repository.get_experiment(session, "batchy")
        variant_id = exp.variants[0].id
        experiment_id = exp.id
    config = AssignmentConfig(
        experiment_id=experiment_id,
        key="batchy",
        status="running",
        salt="s",
        control="v1",
        winner=None,
        weights={"v1": 1.0},
        weight_epoch=0,
        variant_ids={"v1": variant_id},
        model_versions={},
    )
    logger = ExposureLogger(get_engine, flush_seconds=0.5)
    units = [f"u{i}" for i in range(100)]
    units.insert(37, "bad\x00")
    for unit in units:
        assert logger.log(config, unit, "v1")
    assert logger.flush(timeout=20)
    logger.stop()
    assert _exposure_count(committed, experiment_id) == 100
    assert logger.rejected == 1 and logger.written == 100


def test_every_gzip_member_is_read_and_trailing_garbage_refused(
    client: TestClient, ingest_headers: dict[str, str], guarded: dict[str, str]
) -> None:
    def events(start: int) -> bytes:
        return json.dumps(
            {
                "events": [
                    {
                        "type": "exposure",
                        "message_id": str(uuid.uuid4()),
                        "experiment": "guarded",
                        "variant": "v1",
                        "unit_id": f"g{start + i}",
                    }
                    for i in range(10)
                ]
            }
        ).encode()

    headers = {**ingest_headers, "Content-Encoding": "gzip", "Content-Type": "application/json"}
    # two members of one JSON document (a writer that flushed mid-stream)
    document = events(0)
    half = len(document) // 2
    two = gzip.compress(document[:half]) + gzip.compress(document[half:])
    r = client.post("/v1/events", content=two, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 10
    ndjson = {**headers, "Content-Type": "application/x-ndjson"}
    lines = [json.dumps(e).encode() + b"\n" for e in json.loads(events(100))["events"]]
    members = gzip.compress(b"".join(lines[:5])) + gzip.compress(b"".join(lines[5:]))
    r = client.post("/v1/events", content=members, headers=ndjson)
    assert r.status_code == 200 and r.json()["accepted"] == 10, r.text
    garbage = client.post(
        "/v1/events", content=gzip.compress(events(200)) + b"junk", headers=headers
    )
    assert "not gzip" in problem(garbage, 400)["detail"]


def test_pool_exhaustion_is_a_503_with_retry_after(
    committed: Engine, settings_env: Callable[..., None]
) -> None:
    with Session(committed) as session, session.begin():
        secret = keys.create_key(session, scope="admin").secret
    headers = {"Authorization": f"Bearer {secret}"}
    settings_env(pool_size="1", max_overflow="0", pool_timeout_seconds="0.3")
    reset_engine()
    try:
        with TestClient(create_app()) as client:
            assert client.get("/v1/experiments", headers=headers).status_code == 200  # key cached
            held = get_engine().connect()  # the pool's one connection
            try:
                r = client.get("/v1/experiments", headers=headers)
                assert problem(r, 503)["status"] == 503
                assert r.headers["Retry-After"] == "1"
                keys.clear_cache()  # now the key lookup itself waits for the pool
                r = client.get("/v1/experiments", headers=headers)
                assert problem(r, 503) and r.headers["Retry-After"] == "1"
            finally:
                held.close()
            assert client.get("/v1/experiments", headers=headers).status_code == 200
    finally:
        get_settings.cache_clear()
        reset_engine()


def _openapi_paths() -> list[tuple[str, str]]:
    routes = []
    for template, operations in sorted(create_app().openapi()["paths"].items()):
        if "{" not in template:
            continue
        path = re.sub(r"\{[^}]+\}", "nul%00key", template)
        routes += [
            (m.upper(), path) for m in operations if m in ("get", "post", "put", "patch", "delete")
        ]
    return routes


@pytest.mark.parametrize(("method", "path"), _openapi_paths())
def test_nul_in_a_path_parameter_is_a_4xx(
    client: TestClient, admin_headers: dict[str, str], method: str, path: str
) -> None:
    r = client.request(method, path, headers=admin_headers, json={})
    assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text[:300])


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/experiments", experiment("nul-name", name="a\u0000b"), "name"),
        (
            "POST",
            "/v1/experiments",
            experiment("nul-meta", metadata={"k\u0000": 1}),
            "metadata.k\\0",
        ),
        ("POST", "/v1/keys", {"scope": "read", "name": "x\u0000"}, "name"),
        ("PATCH", "/v1/experiments/guarded", {"description": "\u0000"}, "description"),
        ("PUT", "/v1/experiments/guarded/weights", {"weights": {"v1\u0000": 1}}, "weights.v1\\0"),
        ("POST", "/v1/experiments/guarded/pause", {"reason": "r\u0000"}, "reason"),
    ],
)
def test_nul_in_a_body_string_is_a_422_naming_the_field(
    client: TestClient,
    guarded: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    r = client.request(method, path, headers=guarded, json=body)
    fields = field_messages(problem(r, 422))
    assert any(f.replace("\x00", "\\0") == field for f in fields), fields


def test_nul_in_a_query_parameter_is_a_422(client: TestClient, guarded: dict[str, str]) -> None:
    r = client.get("/v1/experiments?starting_after=a%00b", headers=guarded)
    assert field_messages(problem(r, 422)) == {"starting_after": "must not contain NUL characters"}


def test_admin_defined_sizes_are_capped(
    client: TestClient, guarded: dict[str, str], settings_env: Callable[..., None]
) -> None:
    cases = [
        ({"metadata": {"blob": "x" * 20_000}}, "metadata", "ABSTATS_MAX_METADATA_BYTES"),
        (
            {"variants": [{"key": f"v{i}"} for i in range(1, 31)]},
            "variants",
            "ABSTATS_MAX_VARIANTS",
        ),
        (
            {
                "metrics": [
                    {**experiment()["metrics"][0], "key": f"m{i}", "role": "secondary"}
                    for i in range(60)
                ]
                + experiment()["metrics"]
            },
            "metrics",
            "ABSTATS_MAX_METRICS",
        ),
        (
            {"policy": {"ramp": {"steps": [i / 10 for i in range(1, 40)] + [100]}}},
            "policy.ramp.steps",
            "ABSTATS_MAX_RAMP_STEPS",
        ),
    ]
    for overrides, field, setting in cases:
        r = client.post("/v1/experiments", json=experiment("capped", **overrides), headers=guarded)
        assert setting in field_messages(problem(r, 422))[field], (field, r.text[:300])
    steps = {"ramp": {"steps": [i / 10 for i in range(1, 40)] + [100]}}
    r = client.put("/v1/experiments/guarded/policy", json=steps, headers=guarded)
    assert "ABSTATS_MAX_RAMP_STEPS" in field_messages(problem(r, 422))["policy.ramp.steps"]
    # a body past ABSTATS_MAX_REQUEST_BODY_BYTES is refused before it is parsed
    big = client.post(
        "/v1/experiments",
        content=b'{"key": "' + b"x" * (2 * 1024 * 1024) + b'"}',
        headers={**guarded, "Content-Type": "application/json"},
    )
    assert "ABSTATS_MAX_REQUEST_BODY_BYTES" in problem(big, 413)["detail"]
    # list pages end at ABSTATS_MAX_LIST_PAGE_BYTES
    settings_env(max_list_page_bytes=str(64 * 1024))
    for i in range(6):
        body = experiment(f"page-{i}", metadata={"blob": "y" * 15_000})
        assert client.post("/v1/experiments", json=body, headers=guarded).status_code == 201
    page = client.get("/v1/experiments?limit=100", headers=guarded)
    assert page.status_code == 200 and len(page.content) <= 64 * 1024 + 20_000
    listed = page.json()
    assert listed["has_more"] and 1 <= len(listed["data"]) < 7
    seen = [e["key"] for e in listed["data"]]
    while listed["has_more"]:
        listed = client.get(
            f"/v1/experiments?limit=100&starting_after={listed['next_cursor']}", headers=guarded
        ).json()
        seen += [e["key"] for e in listed["data"]]
    assert seen == ["guarded"] + [f"page-{i}" for i in range(6)]  # every one, once, in order
