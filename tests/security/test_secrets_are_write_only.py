"""Issue 14, rows 5, 7, 16 and 17: secrets are write-only (API, reports, report files, logs);
``report.md`` shows raw HTML as text; keys record their last use and their creation and
revocation."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from abstats import keys
from abstats.db.models import ApiKey, ApiKeyEvent
from abstats.reports import service as reports
from tests.security.conftest import experiment

ROUTER_SECRET = "router-hmac-Zq8v"
HOOK_PATH = "/services/T000/B000/XXXXslackpathsecret"


def test_webhook_secrets_are_never_read_back(
    client: TestClient,
    admin_headers: dict[str, str],
    read_headers: dict[str, str],
    db_session: Session,
    tmp_path: Path,
) -> None:
    body = experiment(
        "secretive",
        router={
            "backend": "webhook",
            "config": {"url": "http://127.0.0.1/w", "secret": ROUTER_SECRET},
        },
        notifications={"webhook_url": f"https://localhost{HOOK_PATH}", "secret": "notify-secret"},
    )
    created = client.post("/v1/experiments", json=body, headers=admin_headers)
    assert created.status_code == 201, created.text
    answers = [
        created.text,
        client.get("/v1/experiments/secretive", headers=read_headers).text,
        client.get("/v1/experiments", headers=read_headers).text,
        client.get("/v1/experiments/secretive/report", headers=read_headers).text,
        client.get("/v1/experiments/secretive/report.html", headers=read_headers).text,
        client.get("/v1/experiments/secretive/report.md", headers=read_headers).text,
    ]
    for text in answers:
        assert ROUTER_SECRET not in text and HOOK_PATH not in text and "notify-secret" not in text
    read = client.get("/v1/experiments/secretive", headers=read_headers).json()
    assert read["router"]["config"] == {"url": "http://127.0.0.1/w", "secret_set": True}
    assert read["notifications"] == {
        "webhook_url_set": True,
        "webhook_host": "localhost",
        "secret_set": True,
    }
    # the report files: no secret, and not readable by other users
    first = reports.write_report_files(reports.build(db_session, "secretive"), tmp_path / "r")
    written = sorted(first.parent.iterdir())
    assert {p.name for p in written} == {"index.html", "report.md", "report.json"}
    assert stat.S_IMODE(first.parent.stat().st_mode) & 0o007 == 0
    for path in written:
        assert ROUTER_SECRET not in path.read_text() and HOOK_PATH not in path.read_text()
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, oct(path.stat().st_mode)


def test_report_markdown_shows_raw_html_as_text(
    client: TestClient, admin_headers: dict[str, str], read_headers: dict[str, str]
) -> None:
    payload = "<img src=x onerror=alert(1)>"
    body = experiment("htmly", name=f"Churn {payload}")
    assert client.post("/v1/experiments", json=body, headers=admin_headers).status_code == 201
    start = client.post(
        "/v1/experiments/htmly/start",
        json={"reason": "go <script>alert(2)</script>"},
        headers=admin_headers,
    )
    assert start.status_code == 200, start.text
    md = client.get("/v1/experiments/htmly/report.md", headers=read_headers).text
    assert "<img" not in md and "<script" not in md
    assert "&lt;img src=x onerror=alert(1)>" in md
    assert "&lt;script>alert(2)&lt;/script>" in md


def test_key_cache_failures_never_log_the_token(capsys: pytest.CaptureFixture[str]) -> None:
    """Row 7: the cache is keyed by the token's hash, so a failed reload logs the hash."""
    token = "abs_0123456789ab_" + "S" * 43
    original = keys.principal_cache._load

    def failing(_: str) -> None:
        raise RuntimeError("database went away")

    keys.principal_cache._load = failing  # type: ignore[assignment]
    try:
        from abstats.deps import principal_of

        with pytest.raises(RuntimeError):
            asyncio.run(principal_of(token))
    finally:
        keys.principal_cache._load = original
    captured = capsys.readouterr()
    logged = captured.err + captured.out
    assert "cache.load_failed" in logged
    assert token not in logged and "S" * 43 not in logged
    assert keys.digest(token) in logged


def test_last_use_and_the_key_audit_trail(committed: Engine) -> None:
    from abstats.api.app import create_app

    with Session(committed) as session, session.begin():
        admin = keys.create_key(session, scope="admin", name="ops", actor="cli")
    headers = {"Authorization": f"Bearer {admin.secret}"}
    with TestClient(create_app()) as client:
        _use_create_and_revoke(client, committed, admin, headers)


def _use_create_and_revoke(
    client: TestClient, committed: Engine, admin: keys.NewKey, headers: dict[str, str]
) -> None:
    assert client.get("/v1/experiments", headers=headers).status_code == 200
    created = client.post("/v1/keys", json={"scope": "read", "name": "dash"}, headers=headers)
    assert created.status_code == 201
    new_id = created.json()["id"]
    assert client.delete(f"/v1/keys/{new_id}", headers=headers).status_code == 204
    with Session(committed) as session:
        used = session.get(ApiKey, admin.id)
        assert used is not None and used.last_used_at is not None
        first_use = used.last_used_at
        trail = [
            (e.key_id, e.action, e.scope, e.actor)
            for e in session.scalars(select(ApiKeyEvent).order_by(ApiKeyEvent.id))
        ]
    assert trail == [
        (admin.id, "create", "admin", "cli"),
        (new_id, "create", "read", f"key:{admin.id}"),
        (new_id, "revoke", "read", f"key:{admin.id}"),
    ]
    # cheap: a second reload within the minute does not write again
    keys.clear_cache()
    assert client.get("/v1/experiments", headers=headers).status_code == 200
    with Session(committed) as session:
        again = session.get(ApiKey, admin.id)
        assert again is not None and again.last_used_at == first_use


def test_unknown_tokens_are_not_cached(client: TestClient, admin_headers: dict[str, str]) -> None:
    """Row 9 (in process): a flood of unknown tokens leaves the key cache as it was; a token of
    the wrong format or length is refused before any lookup."""
    assert client.get("/v1/experiments", headers=admin_headers).status_code == 200
    before = len(keys.principal_cache._entries)
    for i in range(300):
        token = f"abs_{i:012x}_" + "x" * 43
        r = client.get("/v1/experiments", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
    assert len(keys.principal_cache._entries) == before
    huge = client.get("/v1/experiments", headers={"Authorization": "Bearer " + "a" * 10_000})
    assert huge.status_code == 401
    too_many = client.get("/v1/experiments", headers={"X-Padding": "p" * 40_000, **admin_headers})
    assert too_many.status_code == 431
    assert "ABSTATS_MAX_HEADER_BYTES" in too_many.json()["detail"]
