"""The main job end to end: ``abstats demo`` starts a real ``abstats dev`` subprocess on a scratch
database, two real scikit-learn models serve traffic through ``/assign`` and the REST API, and the
scheduler's policy must ramp up and promote the better candidate, or roll back the slower one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from abstats.demo.runner import run_demo
from tests.reliability.harness import create_scratch_database, drop_database

pytestmark = pytest.mark.slow


@pytest.fixture
def demo_env(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path]]:
    url = create_scratch_database(database_url, prefix="abstats_demo")
    monkeypatch.setenv("ABSTATS_DATABASE_URL", url)
    monkeypatch.setenv("ABSTATS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ABSTATS_REPORTS_DIR", str(tmp_path / "reports"))
    yield url, tmp_path
    drop_database(url)


def _decisions(url: str, key: str) -> list[dict[str, object]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT d.action, d.actor, d.reason, d.weights_after, d.snapshot_id "
                "FROM decision d JOIN experiment e ON e.id = d.experiment_id "
                "WHERE e.key = :k ORDER BY d.id"
            ),
            {"k": key},
        ).mappings()
        result = [dict(r) for r in rows]
    engine.dispose()
    return result


def _count(url: str, table: str, key: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(
            text(
                f"SELECT count(*) FROM {table} t JOIN experiment e ON e.id = t.experiment_id "
                "WHERE e.key = :k"
            ),
            {"k": key},
        ).scalar_one()
    engine.dispose()
    return int(n)


def test_promote_scenario_ramps_up_and_promotes_v2(demo_env: tuple[str, Path]) -> None:
    url, tmp = demo_env
    lines: list[str] = []
    summary = run_demo(
        "promote", data_dir=tmp / "data", port=_port(), echo=lines.append, progress=False
    )

    assert summary["final_status"] == "concluded", "\n".join(lines)
    decisions = _decisions(url, summary["key"])
    actions = [d["action"] for d in decisions]
    assert actions[0] == "start"
    assert actions[-1] == "promote"
    ramp_steps = [d["weights_after"]["v2"] for d in decisions if d["action"] == "advance_ramp"]  # type: ignore[index]
    assert ramp_steps == [25.0, 50.0], actions  # 5% at start, walked up, promoted from 50%
    assert decisions[-1]["weights_after"] == {"v1": 0.0, "v2": 100.0}
    assert "f1" in str(decisions[-1]["reason"]) and "latency_p95 non-inferior" in str(
        decisions[-1]["reason"]
    )
    assert all(d["snapshot_id"] is not None for d in decisions if d["actor"] == "policy")
    # every prediction the simulator made went through the client and is stored exactly once
    assert _count(url, "prediction", summary["key"]) == summary["requests"]
    # the demo printed every decision as it happened, the final promotion included
    printed = [line for line in lines if line.startswith("[") and " by " in line]
    assert [line.split("] ", 1)[1].split(" ", 1)[0] for line in printed] == actions, lines
    assert "promote by policy" in printed[-1]
    assert any(line.startswith("report: ") for line in lines)


def test_regression_scenario_rolls_back_on_latency(demo_env: tuple[str, Path]) -> None:
    url, tmp = demo_env
    lines: list[str] = []
    summary = run_demo(
        "regression", data_dir=tmp / "data", port=_port(), echo=lines.append, progress=False
    )

    assert summary["final_status"] == "rolled_back", "\n".join(lines)
    last = _decisions(url, summary["key"])[-1]
    assert last["action"] == "rollback"
    assert "latency_p95 worse" in str(last["reason"])
    assert last["weights_after"] == {"v1": 100.0, "v2": 0.0}
    assert any("rollback by policy" in line for line in lines), lines
    assert _count(url, "prediction", summary["key"]) == summary["requests"]


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
