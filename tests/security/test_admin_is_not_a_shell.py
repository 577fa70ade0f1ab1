"""Issue 14, rows 2, 3 and 14: an admin key chooses a router, but every file, command and host
comes from the operator's settings; everything written into nginx's config follows a strict
grammar; a router config is validated when the experiment is created (422 naming the field and
the setting that would allow it), and again before every router call."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from abstats.control import service
from abstats.control.outbox import deliver_pending
from abstats.db.models import Decision, Experiment
from tests.control.conftest import make_experiment
from tests.security.conftest import experiment, field_messages, problem


def _create(client: TestClient, headers: dict[str, str], **overrides: Any) -> Any:
    return client.post("/v1/experiments", json=experiment("routed", **overrides), headers=headers)


def test_the_api_cannot_name_a_command_or_a_file_outside_the_operators_directories(
    client: TestClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    settings_env: Callable[..., None],
) -> None:
    marker = tmp_path / "pwned"
    include_dir = tmp_path / "nginx"
    flagd_dir = tmp_path / "flagd"
    include_dir.mkdir()
    flagd_dir.mkdir()
    settings_env(nginx_include_dir=str(include_dir), flagd_dir=str(flagd_dir))
    nginx = {
        "include_path": str(include_dir / "abstats_split.conf"),
        "upstreams": {"v1": "backend_v1", "v2": "backend_v2"},
    }
    for name in ("test_command", "reload_command"):
        r = _create(
            client,
            admin_headers,
            router={"backend": "nginx", "config": {**nginx, name: ["touch", str(marker)]}},
        )
        messages = field_messages(problem(r, 422))
        assert "ABSTATS_NGINX_" + name.upper() in messages[f"router.config.{name}"]
    for path in ("/etc/nginx/conf.d/evil.conf", str(include_dir / ".." / "evil.conf"), "x.sh"):
        r = _create(
            client,
            admin_headers,
            router={"backend": "nginx", "config": {**nginx, "include_path": path}},
        )
        assert "router.config.include_path" in field_messages(problem(r, 422)), path
    for path in ("/etc/cron.d/evil.json", str(tmp_path / "flags.json")):
        r = _create(
            client, admin_headers, router={"backend": "flagd_file", "config": {"path": path}}
        )
        message = field_messages(problem(r, 422))["router.config.path"]
        assert "ABSTATS_FLAGD_DIR" in message, message
    assert not marker.exists()
    # inside the operator's directories: accepted
    ok = _create(client, admin_headers, router={"backend": "nginx", "config": nginx})
    assert ok.status_code == 201, ok.text


def test_without_operator_directories_no_file_router_is_accepted(
    client: TestClient, admin_headers: dict[str, str], settings_env: Callable[..., None]
) -> None:
    settings_env()  # the defaults: no nginx include dir, no flagd dir
    r = _create(
        client,
        admin_headers,
        router={
            "backend": "nginx",
            "config": {"include_path": "/tmp/a.conf", "upstreams": {"v1": "a", "v2": "b"}},
        },
    )
    assert (
        "ABSTATS_NGINX_INCLUDE_DIR" in field_messages(problem(r, 422))["router.config.include_path"]
    )
    r = _create(
        client, admin_headers, router={"backend": "flagd_file", "config": {"path": "f.json"}}
    )
    assert "ABSTATS_FLAGD_DIR" in field_messages(problem(r, 422))["router.config.path"]


@pytest.mark.parametrize(
    ("backend", "config", "field", "setting"),
    [
        ("webhook", {"url": "http://169.254.169.254/latest/meta-data"}, "url", "WEBHOOK"),
        (
            "webhook",
            {"url": "http://127.0.0.1/w", "read_url": "http://evil.example/r"},
            "read_url",
            "WEBHOOK",
        ),
        ("webhook", {"url": "file:///etc/passwd"}, "url", None),  # row 14
        ("webhook", {"url": "gopher://127.0.0.1/x"}, "url", None),
        ("webhook", {"url": "http://user:pw@127.0.0.1/w"}, "url", None),
        (
            "sagemaker",
            {"endpoint_name": "e", "endpoint_url": "http://evil.example"},
            "endpoint_url",
            "SAGEMAKER",
        ),
        ("sagemaker", {"endpoint_name": "e;rm", "region": "us-east-1"}, "endpoint_name", None),
        ("sagemaker", {"endpoint_name": "e", "region": "../../x"}, "region", None),
        ("webhook", {"url": "http://127.0.0.1/w", "verify": False}, "verify", None),
    ],
)
def test_router_hosts_schemes_and_names_are_checked_at_create_time(
    client: TestClient,
    admin_headers: dict[str, str],
    backend: str,
    config: dict[str, Any],
    field: str,
    setting: str | None,
) -> None:
    r = _create(client, admin_headers, router={"backend": backend, "config": config})
    message = field_messages(problem(r, 422))[f"router.config.{field}"]
    if setting:
        assert f"ABSTATS_{setting}_ALLOWED_HOSTS" in message, message


def test_notification_hosts_come_from_the_operator(
    client: TestClient, admin_headers: dict[str, str], settings_env: Callable[..., None]
) -> None:
    r = _create(client, admin_headers, notifications={"webhook_url": "https://evil.example/x"})
    message = field_messages(problem(r, 422))["notifications.webhook_url"]
    assert "ABSTATS_NOTIFICATION_ALLOWED_HOSTS" in message
    settings_env(notification_allowed_hosts="hooks.example:443")
    ok = _create(client, admin_headers, notifications={"webhook_url": "https://hooks.example/x"})
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("upstreams", {"v1": "a;\n}\nserver { listen 8081; }\n#", "v2": "b"}),
        ("upstreams", {"v1": "load_module /tmp/evil.so;", "v2": "b"}),
        ("key", '${http_x_unit_id}" $x {\n* a;\n}\nload_module /tmp/evil.so;\n#'),
        ("key", "${http_x_unit_id"),
        ("variable", "$abstats_upstream {\n* a;\n}\n"),
        ("variable", "abstats_upstream"),
    ],
)
def test_nginx_names_follow_a_strict_grammar(
    client: TestClient,
    admin_headers: dict[str, str],
    tmp_path: Path,
    settings_env: Callable[..., None],
    field: str,
    value: Any,
) -> None:
    settings_env(nginx_include_dir=str(tmp_path))
    config = {
        "include_path": str(tmp_path / "split.conf"),
        "upstreams": {"v1": "backend_v1", "v2": "backend_v2"},
        field: value,
    }
    r = _create(client, admin_headers, router={"backend": "nginx", "config": config})
    messages = field_messages(problem(r, 422))
    assert any(f.startswith(f"router.config.{field}") for f in messages), messages
    assert not (tmp_path / "split.conf").exists()


def test_a_stored_config_the_settings_do_not_allow_is_refused_at_delivery(
    committed: Engine, tmp_path: Path, settings_env: Callable[..., None]
) -> None:
    """A row written before the operator's settings (or by hand) still cannot run a command:
    the router call is refused and the experiment paused, naming the setting."""
    marker = tmp_path / "pwned"
    settings_env(
        nginx_include_dir=str(tmp_path), nginx_test_command="true", nginx_reload_command="true"
    )
    with Session(committed) as session, session.begin():
        make_experiment(session, "legacy", policy={"ramp": None})
        row = session.scalars(select(Experiment).where(Experiment.key == "legacy")).one()
        row.router = {
            "backend": "nginx",
            "config": {
                "include_path": "/etc/nginx/evil.conf",
                "upstreams": {"v1": "a", "v2": "b"},
                "test_command": ["touch", str(marker)],
            },
        }
    with Session(committed) as session, session.begin():
        service.start(session, "legacy", actor="key:ops")
    deliver_pending(committed)
    assert not marker.exists()
    assert not Path("/etc/nginx/evil.conf").exists()
    with Session(committed) as session:
        pause = session.scalars(select(Decision).where(Decision.action == "pause")).one()
    assert "not allowed by this server's settings" in pause.reason
    assert "ABSTATS_NGINX_TEST_COMMAND" in pause.reason


@contextmanager
def _answering(status: int, body: bytes) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def test_response_bodies_of_router_hosts_do_not_reach_decision_reasons(committed: Engine) -> None:
    """Row 2: what a host answers is not copied into reasons that read keys can see."""
    leaked = b"root:x:0:0:root:/root:/bin/bash INTERNAL-SECRET"
    with _answering(500, leaked) as url:
        router = {"backend": "webhook", "config": {"url": url}}
        with Session(committed) as session, session.begin():
            make_experiment(session, "leaky", router=router, policy={"ramp": None})
            service.start(session, "leaky", actor="key:ops")
        deliver_pending(committed, max_router_attempts=1)
    with Session(committed) as session:
        reasons = [d.reason for d in session.scalars(select(Decision))]
        results = [str(d.router_result) for d in session.scalars(select(Decision))]
    assert any("answered 500" in r for r in reasons), reasons
    assert not any("INTERNAL-SECRET" in text for text in reasons + results)
