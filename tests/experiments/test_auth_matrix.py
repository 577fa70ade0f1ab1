"""Every /v1 route enforces auth: 401 without a key or with an unknown one, 403 with a key of the
wrong scope, and never 401/403 for a key with the route's scope or admin. Iterates over
``app.routes``, so routes added by any domain join the matrix (and fail it if unprotected)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from abstats.api.app import create_app
from abstats.db.models import API_SCOPES
from abstats.keys import create_key


def v1_routes() -> list[tuple[str, str, str]]:
    """(method, concrete path, template) of every /v1 operation the app serves (from its OpenAPI
    document, the public list of routes of every domain)."""
    routes = []
    for template, operations in sorted(create_app().openapi()["paths"].items()):
        if not template.startswith("/v1"):
            continue
        path = re.sub(r"\{[^}]+\}", "nonexistent", template)
        for method in sorted(operations):
            if method.upper() in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
                routes.append((method.upper(), path, template))
    return routes


ROUTES = v1_routes()
IDS = [f"{m} {t}" for m, _, t in ROUTES]
EXPECTED = {
    ("POST", "/v1/experiments"): "admin",
    ("GET", "/v1/experiments"): "read",
    ("GET", "/v1/experiments/{key}"): "read",
    ("PATCH", "/v1/experiments/{key}"): "admin",
    ("POST", "/v1/keys"): "admin",
    ("DELETE", "/v1/keys/{key_id}"): "admin",
    ("POST", "/v1/events"): "ingest",
}


def test_the_matrix_covers_the_registry_and_event_routes() -> None:
    assert set(EXPECTED) <= {(m, t) for m, _, t in ROUTES}


@pytest.mark.parametrize(("method", "path", "template"), ROUTES, ids=IDS)
def test_missing_or_unknown_key_is_401(
    client: TestClient, method: str, path: str, template: str
) -> None:
    r = client.request(method, path)
    assert r.status_code == 401, r.text
    assert "Missing API key" in r.json()["detail"]
    r = client.request(method, path, headers={"Authorization": "Bearer abs_0000_not-a-key"})
    assert r.status_code == 401, r.text
    assert r.json()["detail"] == "Unknown or revoked API key."
    r = client.request(method, path, headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert r.status_code == 401


@pytest.mark.parametrize(("method", "path", "template"), ROUTES, ids=IDS)
def test_scope_matrix(
    committed_engine: Engine, client: TestClient, method: str, path: str, template: str
) -> None:
    # committed_engine first: it is torn down (TRUNCATE) after the client's transaction ends
    """admin passes everywhere; a narrower key either passes or gets 403 naming the scope the
    route needs, and a key of that named scope passes. The keys are committed, so routes that
    authenticate on their own connection see them too."""
    secrets = {}
    with Session(committed_engine) as session:
        for scope in API_SCOPES:
            secrets[scope] = create_key(session, scope=scope).secret
        session.commit()
    outcome: dict[str, tuple[int, str]] = {}
    for scope in API_SCOPES:
        secret = secrets[scope]
        r = client.request(method, path, headers={"Authorization": f"Bearer {secret}"})
        outcome[scope] = (r.status_code, r.text)
        assert r.status_code != 401, (scope, r.text)
    assert outcome["admin"][0] != 403, outcome["admin"]
    allowed = {s for s, (status, _) in outcome.items() if status != 403}
    for scope, (status, body) in outcome.items():
        if status == 403:
            needed = re.search(r"needs '(\w+)'", body)
            assert needed, body
            assert needed.group(1) in allowed, (scope, body, allowed)
    assert len(allowed - {"admin"}) <= 1, f"{method} {template} is open to {allowed}"
    expected = EXPECTED.get((method, template))
    if expected is not None:
        assert allowed == {expected, "admin"}, (method, template, allowed)
