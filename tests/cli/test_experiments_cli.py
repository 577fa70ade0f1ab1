"""``abstats experiments list|show|create|apply -f`` and ``abstats keys list`` on the real
database: YAML and JSON files with the body of ``POST /v1/experiments``; apply creates, then
brings the experiment in line with the file, refusing what cannot change."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from abstats.cli import app

SPEC = """\
key: churn
name: Churn model v2
control: v1
variants:
  - {key: v1, model_version: xgb-1.0, weight: 90}
  - {key: v2, model_version: xgb-2.0, weight: 10}
metrics:
  - {key: churn, kind: proportion, outcome: churned, role: primary, direction: decrease}
policy: {mode: auto, mde: "2%"}
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_apply_creates_updates_and_refuses_what_cannot_change(
    committed_engine: Engine, tmp_path: Path
) -> None:
    spec = tmp_path / "churn.yaml"
    spec.write_text(SPEC)
    assert run("experiments", "apply", "-f", str(spec))[1].strip() == "created churn (draft)"
    assert run("experiments", "apply", "-f", str(spec))[1].strip() == "unchanged churn (draft)"

    spec.write_text(SPEC.replace("weight: 90", "weight: 80").replace('"2%"', '"3%"'))
    code, out, err = run("experiments", "apply", "-f", str(spec))
    assert (code, out.strip()) == (0, "updated churn (draft): variants, policy"), err
    with committed_engine.connect() as conn:
        weights, mde = conn.execute(
            text(
                "SELECT w.weights, e.policy->>'mde' FROM weight_epoch w "
                "JOIN experiment e ON e.id = w.experiment_id WHERE e.key = 'churn'"
            )
        ).one()
    assert weights == {"v1": 80.0, "v2": 10.0} and mde == "3%"

    assert run("experiments", "start", "churn")[0] == 0
    spec.write_text(SPEC.replace("Churn model v2", "Churn v2"))  # the policy back to 2% too
    code, out, _ = run("experiments", "apply", "-f", str(spec))
    assert (code, out.strip()) == (0, "updated churn (running): name, policy")
    spec.write_text(SPEC.replace("Churn model v2", "Churn v2").replace("xgb-2.0", "xgb-2.1"))
    code, _, err = run("experiments", "apply", "-f", str(spec))
    assert code == 2 and "can only be changed while it is a draft" in err
    spec.write_text(SPEC.replace("Churn model v2", "Churn v2") + "router: {backend: webhook}\n")
    code, _, err = run("experiments", "apply", "-f", str(spec))
    assert code == 2 and "Traceback" not in err

    code, out, _ = run("experiments", "list")
    rows = [line.split("\t") for line in out.strip().splitlines()]
    assert rows[0] == ["key", "status", "weights", "updated", "name"]
    assert rows[1][:3] == ["churn", "running", "v1=95% v2=5%"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows[1][3])  # UTC, with its zone
    shown = json.loads(run("experiments", "show", "churn")[1])
    assert shown["key"] == "churn" and shown["name"] == "Churn v2"


def test_create_from_json_and_keys_list(committed_engine: Engine, tmp_path: Path) -> None:
    import yaml

    body = yaml.safe_load(SPEC) | {"key": "churn-json"}
    spec = tmp_path / "exp.json"
    spec.write_text(json.dumps(body))
    code, out, err = run("experiments", "create", "-f", str(spec))
    assert code == 0, err
    assert out.startswith("created churn-json (draft)")
    assert run("experiments", "create", "-f", str(spec))[0] == 2  # exists: use apply
    assert run("experiments", "list", "--status", "draft")[1].count("churn-json") == 1

    code, out, _ = run("keys", "create", "--scope", "read", "--name", "dashboards")
    secret = out.strip().splitlines()[-1]
    key_id = secret.split("_")[1]
    listed = run("keys", "list")[1]
    assert f"{key_id}\tread\t" in listed and "dashboards" in listed and secret not in listed
    assert run("keys", "revoke", key_id)[1].strip() == f"revoked {key_id}"
    assert key_id not in run("keys", "list")[1]
    assert f"{key_id}\tread\t" in run("keys", "list", "--all")[1]


@pytest.mark.parametrize("stdin_spec", [SPEC])
def test_apply_reads_stdin(committed_engine: Engine, stdin_spec: str) -> None:
    result = CliRunner().invoke(app, ["experiments", "apply", "-f", "-"], input=stdin_spec)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "created churn (draft)"
