"""The console over HTTP (TestClient, real database): sign-in and the session cookie, scopes as on
the REST API, CSRF on every form, actions with a confirmation and a reason, the policy editor's
messages at their fields, and /docs served without a CDN. The browser tests are in
test_browser.py."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from abstats.console import session as console_session
from abstats.db.models import Decision
from abstats.keys import create_key, revoke_key
from tests.control.test_whatif import _running_with_history


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def sign_in(client: TestClient, secret: str) -> Any:
    page = client.get("/console/login")
    return client.post(
        "/console/login",
        data={"key": secret, "csrf": _csrf(page.text), "next": "/console/experiments/churn"},
        follow_redirects=False,
    )


def test_root_and_pages_need_a_session(client: TestClient) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/console/"
    page = client.get("/console/experiments/churn", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/console/login?next=/console/experiments/churn"


def test_sign_in_sets_a_strict_httponly_expiring_cookie(
    client: TestClient, db_session: Session
) -> None:
    _running_with_history(db_session)
    secret = create_key(db_session, scope="read").secret
    bad = client.post(
        "/console/login", data={"key": secret, "csrf": "forged"}, follow_redirects=False
    )
    assert bad.status_code == 400 and "expired" in bad.text  # login CSRF
    assert sign_in(client, "abs_nope_nope").status_code == 401
    done = sign_in(client, secret)
    assert done.status_code == 303 and done.headers["location"] == "/console/experiments/churn"
    cookie = next(
        c for c in done.headers.get_list("set-cookie") if c.startswith("abstats_console=")
    )
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
    assert secret not in cookie  # the cookie carries the key's hash, never the key
    listing = client.get("/console/")
    assert listing.status_code == 200 and 'data-key="churn"' in listing.text
    assert "default-src 'none'" in listing.headers["content-security-policy"]
    assert client.get("/console/?status=draft").text.count('data-key="churn"') == 0
    # a forged or tampered cookie is no session
    client.cookies.clear()
    client.cookies.set("abstats_console", cookie.split(";")[0].split("=", 1)[1] + "x")
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_sign_in_never_redirects_off_the_server(client: TestClient, db_session: Session) -> None:
    secret = create_key(db_session, scope="read").secret
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "console"):
        page = client.get("/console/login", params={"next": target})
        done = client.post(
            "/console/login",
            data={"key": secret, "csrf": _csrf(page.text), "next": target},
            follow_redirects=False,
        )
        assert done.headers["location"] == "/console/", target


def test_sign_out(client: TestClient, db_session: Session) -> None:
    sign_in(client, create_key(db_session, scope="read").secret)
    page = client.get("/console/")
    stale = client.post("/console/logout", data={"csrf": "x"}, follow_redirects=False)
    assert stale.status_code == 400  # a forged sign-out form does nothing
    assert client.get("/console/", follow_redirects=False).status_code == 200
    out = client.post("/console/logout", data={"csrf": _csrf(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_a_revoked_key_ends_its_sessions(client: TestClient, db_session: Session) -> None:
    key = create_key(db_session, scope="read")
    sign_in(client, key.secret)
    assert client.get("/console/", follow_redirects=False).status_code == 200
    revoke_key(db_session, key.id)
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_scopes_apply(client: TestClient, db_session: Session) -> None:
    _running_with_history(db_session)
    sign_in(client, create_key(db_session, scope="ingest").secret)
    assert client.get("/console/").status_code == 403
    sign_in(client, create_key(db_session, scope="read").secret)
    page = client.get("/console/experiments/churn")
    assert page.status_code == 200 and 'id="action-pause"' not in page.text
    posted = client.post(
        "/console/experiments/churn/actions/pause",
        data={"csrf": _csrf(page.text), "reason": "x", "confirmed": "yes"},
    )
    assert posted.status_code == 403 and "this page needs &#39;admin&#39;" in posted.text
    policy = client.get("/console/experiments/churn/policy")
    saved = client.post(
        "/console/experiments/churn/policy",
        data={"csrf": _csrf(policy.text), "op": "save", "policy": '{"mode": "off"}'},
    )
    assert saved.status_code == 403 and "needs an admin key" in saved.text


def test_pause_needs_csrf_a_reason_and_a_confirmation(
    client: TestClient, db_session: Session
) -> None:
    experiment = _running_with_history(db_session)
    sign_in(client, create_key(db_session, scope="admin").secret)
    page = client.get("/console/experiments/churn")
    csrf = _csrf(page.text)
    url = "/console/experiments/churn/actions/pause"
    forged = client.post(url, data={"csrf": "x", "reason": "r", "confirmed": "yes"})
    assert forged.status_code == 422 and "security token" in forged.text
    no_reason = client.post(url, data={"csrf": csrf, "reason": " "})
    assert no_reason.status_code == 422 and "say why" in no_reason.text
    confirm = client.post(url, data={"csrf": csrf, "reason": "latency alarm"})
    assert confirm.status_code == 200 and 'id="confirm"' in confirm.text
    db_session.refresh(experiment)
    assert experiment.status == "running"  # nothing happens before the confirmation
    done = client.post(
        url,
        data={"csrf": csrf, "reason": "latency alarm", "confirmed": "yes"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    db_session.refresh(experiment)
    assert experiment.status == "paused"
    decision = db_session.query(Decision).order_by(Decision.id.desc()).first()
    assert decision is not None and decision.reason == "latency alarm"
    assert decision.actor.startswith("key:")
    shown = client.get(done.headers["location"])
    assert "Recorded decision" in shown.text and "latency alarm" in shown.text


def test_policy_editor(client: TestClient, db_session: Session) -> None:
    _running_with_history(db_session)
    sign_in(client, create_key(db_session, scope="admin").secret)
    csrf = _csrf(client.get("/console/experiments/churn/policy").text)
    url = "/console/experiments/churn/policy"
    invalid = client.post(
        url,
        data={"csrf": csrf, "op": "dry-run", "policy": '{"alpha": 2, "ramp": {"steps": [50, 5]}}'},
    )
    assert invalid.status_code == 422
    # each message directly follows the line of its field
    assert re.search(
        r'data-path="ramp.steps">[^\n]*</span>\n<span class="problem" data-field="policy.ramp.steps"',
        invalid.text,
    )
    assert re.search(
        r'data-path="alpha">[^\n]*</span>\n<span class="problem" data-field="policy.alpha"',
        invalid.text,
    )
    syntax = client.post(url, data={"csrf": csrf, "op": "check", "policy": '{"alpha": }'})
    assert syntax.status_code == 422 and "line 1, column 11" in syntax.text
    dry = client.post(url, data={"csrf": csrf, "op": "dry-run", "policy": '{"ramp": null}'})
    assert dry.status_code == 200 and "Dry run: promote" in dry.text
    replay = client.post(
        url,
        data={
            "csrf": csrf,
            "op": "replay",
            "policy": '{"ramp": {"steps": [5, 25, 50, 100], "min_interval": "30m"}}',
        },
    )
    assert "Replay: 3 decisions over 7 snapshots" in replay.text
    saved = client.post(url, data={"csrf": csrf, "op": "save", "policy": '{"mode": "recommend"}'})
    assert saved.status_code == 200 and 'id="saved"' in saved.text
    assert client.get("/v1/experiments/churn/policy", headers={}).status_code == 401


def test_docs_are_served_locally(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(
        r"url: '([^']+)'", page.text
    )
    assert urls and all(u.startswith("/") for u in urls), urls
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert client.get("/docs/assets/../../etc/passwd").status_code == 404


def test_the_server_secret_is_generated_once_with_mode_0600(
    tmp_path: Any, monkeypatch: Any
) -> None:
    from abstats.config import get_settings

    monkeypatch.setenv("ABSTATS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ABSTATS_CONSOLE_SECRET", raising=False)
    get_settings.cache_clear()
    console_session.server_secret.cache_clear()
    try:
        first = console_session.server_secret()
        console_session.server_secret.cache_clear()
        assert console_session.server_secret() == first and len(first) >= 40
        assert (tmp_path / "console-secret").stat().st_mode & 0o777 == 0o600
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        console_session.server_secret.cache_clear()


def test_workers_starting_together_share_one_secret(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "ABSTATS_DATA_DIR": str(tmp_path)}
    env.pop("ABSTATS_CONSOLE_SECRET", None)
    code = "from abstats.console.session import server_secret; print(server_secret())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    secrets_seen = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(secrets_seen) == 1 and len(secrets_seen.pop()) >= 40
    assert [p.name for p in tmp_path.iterdir()] == ["console-secret"]  # no temporary files left
