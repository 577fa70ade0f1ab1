"""``abstats ingest FILE`` for CSV, JSON lines and Parquet, writing to the real database."""

from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from abstats.cli import app
from abstats.experiments.schemas import parse_create
from abstats.experiments.service import create_experiment
from tests.ingest.conftest import EXPERIMENT


def _setup(engine: Engine) -> None:
    with Session(engine) as session:
        create_experiment(session, parse_create(EXPERIMENT))
        session.commit()


def _predictions(engine: Engine) -> list[tuple[str, float | None, dict[str, object] | None]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(  # type: ignore[misc]
                text("SELECT unit_id, score, features FROM prediction ORDER BY unit_id")
            )
        ]


def test_csv_with_feature_columns_and_rerun_is_idempotent(
    committed_engine: Engine, tmp_path: Path
) -> None:
    _setup(committed_engine)
    path = tmp_path / "preds.csv"
    pd.DataFrame(
        {
            "variant": ["v1", "v2", "v2"],
            "unit_id": ["u1", "u2", "u3"],
            "timestamp": ["2026-11-01T00:00:00Z"] * 3,
            "score": [0.1, None, 0.3],
            "latency_ms": [5, 6, 7],
            "features.plan": ["gold", "free", None],
            "features.tenure": [1, 2, 3],
        }
    ).to_csv(path, index=False)
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["ingest", str(path), "--experiment", "churn", "--type", "prediction", "--batch-size", "2"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "accepted 3 duplicates 0 rejected 0"
    rows = _predictions(committed_engine)
    assert rows[0] == ("u1", 0.1, {"plan": "gold", "tenure": 1})
    assert rows[1] == ("u2", None, {"plan": "free", "tenure": 2})
    assert rows[2] == ("u3", 0.3, {"tenure": 3})
    result = runner.invoke(
        app, ["ingest", str(path), "--experiment", "churn", "--type", "prediction"]
    )
    assert result.stdout.strip().splitlines()[-1] == "accepted 0 duplicates 3 rejected 0"


def test_jsonl_reports_rejected_rows_and_exits_2(committed_engine: Engine, tmp_path: Path) -> None:
    _setup(committed_engine)
    path = tmp_path / "events.jsonl"
    events = [
        {"type": "exposure", "variant": "v1", "unit_id": "u1"},
        {"type": "outcome", "unit_id": "u1", "name": "converted", "value": 1},
        {"type": "prediction", "variant": "v1", "unit_id": "u1", "latency_ms": -3},
    ]
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events))
    result = CliRunner().invoke(app, ["ingest", str(path), "--experiment", "churn"])
    assert result.exit_code == 2
    assert result.stdout.strip().splitlines()[-1] == "accepted 2 duplicates 0 rejected 1"
    assert "row 3: latency_ms: must be >= 0, got -3" in result.stderr


def test_parquet(committed_engine: Engine, tmp_path: Path) -> None:
    _setup(committed_engine)
    path = tmp_path / "p.parquet"
    pd.DataFrame(
        {
            "experiment": ["churn"] * 2,
            "type": ["prediction"] * 2,
            "variant": ["v1", "v2"],
            "unit_id": ["a", "b"],
            "score": [0.5, 0.6],
            "error": [False, True],
            "timestamp": pd.to_datetime(["2026-11-01T00:00:00Z"] * 2),
        }
    ).to_parquet(path)
    result = CliRunner().invoke(app, ["ingest", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "accepted 2 duplicates 0 rejected 0"
    with committed_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM prediction WHERE error")).scalar_one() == 1


def test_unknown_format_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("a")
    result = CliRunner().invoke(app, ["ingest", str(path)])
    assert result.exit_code == 2
    assert "--format csv, jsonl or parquet" in result.stderr
