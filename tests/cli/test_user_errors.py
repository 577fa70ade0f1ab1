"""Every user error of the CLI named in issue 15 is one clear line on stderr, exit code 2, no
traceback; ``--debug`` shows the traceback. Commands run through ``abstats.cli.main`` (the console
script's function) in-process, and as a real process where the process's own output matters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from abstats.cli import main
from abstats.experiments.schemas import parse_create
from abstats.experiments.service import create_experiment
from tests.ingest.conftest import LiveServer, live_server

__all__ = ["live_server"]

EXPERIMENT = {
    "key": "churn",
    "name": "Churn",
    "control": "v1",
    "variants": [{"key": "v1"}, {"key": "v2"}],
    "metrics": [
        {
            "key": "churn",
            "kind": "proportion",
            "outcome": "churned",
            "role": "primary",
            "direction": "decrease",
        }
    ],
}


def cli(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["abstats", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), captured.out, captured.err


def assert_user_error(result: tuple[int, str, str], *fragments: str) -> None:
    code, _, err = result
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], err


@pytest.fixture
def experiment(committed_engine: Engine) -> str:
    with Session(committed_engine) as session:
        create_experiment(session, parse_create(EXPERIMENT))
        session.commit()
    return "churn"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"unit_id,variant\nu1,v1\nu2,v1,x,y\n", "not valid CSV: Error tokenizing data"),
        (b"unit_id,variant\n\xff\xfeu1,v1\n", "not UTF-8 text"),
        (b"", "is empty"),
        (b"unit_id,variant,latency\nu1,v1,3\n", "did you mean 'latency_ms'?"),
        (b"variant\nv1\n", "no unit_id column"),
    ],
    ids=["malformed", "not-utf8", "empty", "unknown-column", "no-unit-id"],
)
def test_ingest_bad_files(
    content: bytes,
    expected: str,
    experiment: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "events.csv"
    path.write_bytes(content)
    result = cli(
        ["ingest", str(path), "--experiment", experiment, "--type", "exposure"], capsys, monkeypatch
    )
    assert_user_error(result, "events.csv", expected)


def test_ingest_unknown_experiment_is_one_line_not_one_per_row(
    experiment: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "big.csv"
    path.write_text("unit_id,variant\n" + "".join(f"u{i},v1\n" for i in range(5000)))
    result = cli(
        ["ingest", str(path), "--experiment", "churm", "--type", "exposure"], capsys, monkeypatch
    )
    assert_user_error(result, "unknown experiment(s) 'churm'")
    variants = tmp_path / "variants.jsonl"
    variants.write_text('{"type": "exposure", "unit_id": "u1", "variant": "v9"}\n' * 100)
    result = cli(["ingest", str(variants), "--experiment", experiment], capsys, monkeypatch)
    assert_user_error(result, "unknown variant(s) 'v9'", "v1, v2")


def test_keys_and_experiments_user_errors(
    experiment: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert_user_error(
        cli(["keys", "create", "--scope", "superuser"], capsys, monkeypatch),
        "--scope must be one of ingest, read, admin",
    )
    assert_user_error(
        cli(["keys", "revoke", "nope"], capsys, monkeypatch), "No active API key with id 'nope'"
    )
    assert_user_error(
        cli(["experiments", "show", "nope"], capsys, monkeypatch), "No experiment with key 'nope'"
    )
    assert_user_error(
        cli(["experiments", "start", "nope"], capsys, monkeypatch), "No experiment with key"
    )
    assert_user_error(
        cli(["experiments", "create", "-f", str(tmp_path / "missing.yaml")], capsys, monkeypatch),
        "missing.yaml: no such file",
    )
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("key: [churn\n")
    assert_user_error(
        cli(["experiments", "create", "-f", str(bad_yaml)], capsys, monkeypatch),
        "not valid YAML at line 2",
    )
    spec = tmp_path / "churn.json"
    spec.write_text('{"key": "churn", "name": "Churn", "control": "v1"}')
    code, _, err = cli(["experiments", "create", "-f", str(spec)], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[0].startswith("error: Invalid experiment: variants: Field required")
    assert "  metrics: Field required" in err.splitlines()  # every problem listed
    assert_user_error(
        cli(
            ["experiments", "create", "-f", str(_write(tmp_path, EXPERIMENT))], capsys, monkeypatch
        ),
        "already exists",
    )


def _write(tmp_path: Path, body: dict[str, object]) -> Path:
    import json

    path = tmp_path / "exp.json"
    path.write_text(json.dumps(body))
    return path


def _process(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "ABSTATS_DEBUG"}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "abstats", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )


def test_a_real_process_prints_one_line_and_debug_shows_the_trace(database_url: str) -> None:
    plain = _process(["experiments", "show", "nope"])
    assert plain.returncode == 2
    assert plain.stderr.strip() == "error: No experiment with key 'nope'."
    traced = _process(["--debug", "experiments", "show", "nope"])
    assert traced.returncode == 1
    assert "Traceback (most recent call last)" in traced.stderr
    assert "abstats.errors.NotFound" in traced.stderr
    unreachable = _process(
        ["experiments", "list"], ABSTATS_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none"
    )
    assert unreachable.returncode == 2
    assert "Traceback" not in unreachable.stderr
    assert unreachable.stderr.strip().startswith("error: cannot reach the database")
    assert "ABSTATS_DATABASE_URL" in unreachable.stderr


def test_start_up_logs_only_with_verbose(database_url: str) -> None:
    quiet = _process(["db", "upgrade"], ABSTATS_LOG_JSON="false")
    assert quiet.returncode == 0 and quiet.stdout.startswith("database at ")
    assert quiet.stderr == ""  # no Alembic (nor embedded PostgreSQL) chatter
    verbose = _process(["-v", "db", "upgrade"], ABSTATS_LOG_JSON="false")
    assert verbose.returncode == 0
    assert "alembic.runtime.migration" in verbose.stderr


def test_ingest_through_the_api_with_an_ingest_key_stops_at_an_unknown_experiment(
    live_server: LiveServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An ingest key cannot read experiments, so the check happens on the first batch."""
    path = tmp_path / "big.csv"
    path.write_text("unit_id,variant\n" + "".join(f"u{i},v1\n" for i in range(3000)))
    args = ["ingest", str(path), "--experiment", "churm", "--type", "exposure"]
    args += ["--url", live_server.url, "--api-key", live_server.ingest_key]
    assert_user_error(
        cli(args, capsys, monkeypatch),
        "big.csv row 1: unknown experiment 'churm'",
        "stopped there (0 rows accepted before it)",
    )
