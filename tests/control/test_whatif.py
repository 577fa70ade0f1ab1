"""Dry run and replay of a policy that is not saved (``abstats.control.whatif``), on the real
database: the decisions they report, the state threaded through a replay, and that nothing is
written. Also the REST endpoints and the CLI commands."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from abstats.control import service, whatif
from abstats.db.models import Decision, Experiment, OutboxItem, WeightEpoch
from abstats.errors import Conflict, InvalidInput
from tests.control.conftest import add_snapshot, make_experiment
from tests.control.snapshots import T0, comparison, good_guardrail, primary, snapshot

RAMP = {"ramp": {"steps": [5, 25, 50, 100], "min_interval": "30m"}}


def _writes(session: Session, experiment: Experiment) -> tuple[int, ...]:
    return tuple(
        session.scalar(select(func.count()).select_from(m).where(m.experiment_id == experiment.id))
        or 0
        for m in (Decision, WeightEpoch, OutboxItem)
    )


def _running_with_history(session: Session) -> Experiment:
    """Started at T0 at the 5% step; snapshots every 20 minutes: nothing significant for 100
    minutes, then v2 clearly better at T0+120m and T0+140m."""
    experiment = make_experiment(session, policy=RAMP)
    service.start(session, "churn", actor="key:abc")
    experiment.started_at = T0
    session.flush()
    for minutes in (20, 40, 60, 80, 100, 120, 140):
        better = minutes >= 120
        first = primary(
            comparison(effect=0.05, lo=0.02, hi=0.08, p=0.001, better=True)
            if better
            else comparison(effect=0.01, lo=-0.02, hi=0.04, p=0.5)
        )
        add_snapshot(
            session,
            experiment,
            snapshot(
                [first, good_guardrail()],
                cutoff=T0 + timedelta(minutes=minutes),
                weight_epoch=1,
                weights={"v1": 95.0, "v2": 5.0},
            ),
        )
    return experiment


def test_replay_threads_the_simulated_state_and_writes_nothing(db_session: Session) -> None:
    experiment = _running_with_history(db_session)
    before = _writes(db_session, experiment)
    result = whatif.replay(db_session, "churn", RAMP)
    assert _writes(db_session, experiment) == before
    assert result.snapshots == 7
    steps = [(d.action, d.cutoff - T0, d.weights_after) for d in result.decisions]
    # 5 -> 25 once the 5% step was observed 30 min (at +40m, not +20m); 25 -> 50 after another
    # 30 min at the new step (+80m, not +60m: the clock restarts at the simulated advance); at 50
    # (the promotion step) the better primary promotes at +120m; after that nothing (+140m)
    assert steps == [
        ("advance_ramp", timedelta(minutes=40), {"v1": 75.0, "v2": 25.0}),
        ("advance_ramp", timedelta(minutes=80), {"v1": 50.0, "v2": 50.0}),
        ("promote", timedelta(minutes=120), {"v1": 0.0, "v2": 100.0}),
    ]
    assert result.decisions[2].status_before == "running"
    assert result.decisions[2].status_after == "concluded"
    assert result.final_status == "concluded"
    data = result.as_dict()
    assert data["decisions"][0]["reason"].startswith("advance ramp 5% -> 25%")
    assert data["actual_policy_decisions"] == []


def test_replay_of_a_slower_ramp_and_of_recommend_mode(db_session: Session) -> None:
    _running_with_history(db_session)
    slow = {"ramp": {"steps": [5, 25, 50, 100], "min_interval": "1h"}}
    actions = [
        (d.action, d.cutoff - T0) for d in whatif.replay(db_session, "churn", slow).decisions
    ]
    assert actions == [
        ("advance_ramp", timedelta(minutes=60)),
        ("advance_ramp", timedelta(minutes=120)),
        ("promote", timedelta(minutes=140)),  # the first snapshot at 50% with v2 better
    ]
    recommend = whatif.replay(db_session, "churn", {"mode": "recommend", "ramp": None})
    # a recommendation changes nothing, and is made once, not at every snapshot
    assert [(d.action, d.applied) for d in recommend.decisions] == [("promote", False)]
    assert recommend.final_status == "running"


def test_dry_run_judges_the_latest_snapshot_as_the_experiment_is_now(db_session: Session) -> None:
    experiment = _running_with_history(db_session)
    before = _writes(db_session, experiment)
    no_ramp = whatif.dry_run(db_session, "churn", {"ramp": None})
    assert no_ramp.action.kind == "promote"
    assert no_ramp.action.new_weights == {"v1": 0.0, "v2": 100.0}
    assert no_ramp.status == "running" and no_ramp.weights == {"v1": 95.0, "v2": 5.0}
    strict = whatif.dry_run(db_session, "churn", {"ramp": None, "promote": {"min_lift": "10%"}})
    assert strict.action.kind == "keep_running"
    assert _writes(db_session, experiment) == before


def test_invalid_policy_and_no_snapshot(db_session: Session) -> None:
    make_experiment(db_session, policy=RAMP)
    with pytest.raises(InvalidInput) as info:
        whatif.dry_run(db_session, "churn", {"ramp": {"steps": [50, 5]}, "alpha": 2})
    fields = {p.field for p in info.value.errors}
    assert {"policy.alpha", "policy.ramp.steps"} <= fields
    with pytest.raises(Conflict, match="no analysis snapshot yet"):
        whatif.dry_run(db_session, "churn", RAMP)
    assert whatif.replay(db_session, "churn", RAMP).snapshots == 0


def test_rest_endpoints(
    client: TestClient,
    db_session: Session,
    read_headers: dict[str, str],
    ingest_headers: dict[str, str],
) -> None:
    _running_with_history(db_session)
    url = "/v1/experiments/churn/policy"
    dry = client.post(f"{url}/dry-run", json={"ramp": None}, headers=read_headers)
    assert dry.status_code == 200, dry.text
    assert dry.json()["action"] == "promote"
    replay = client.post(f"{url}/replay", json=RAMP, headers=read_headers)
    assert replay.status_code == 200
    assert [d["action"] for d in replay.json()["decisions"]] == [
        "advance_ramp",
        "advance_ramp",
        "promote",
    ]
    bad = client.post(f"{url}/replay", json={"alpha": "often"}, headers=read_headers)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in bad.json()["errors"]] == ["policy.alpha"]
    assert client.post(f"{url}/dry-run", json=RAMP, headers=ingest_headers).status_code == 403
    assert client.post(f"{url}/dry-run", json=RAMP).status_code == 401


def test_cli(committed: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from abstats.cli import app
    from abstats.db.engine import session_scope

    with session_scope() as session:
        _running_with_history(session)
    good = tmp_path / "policy.json"
    good.write_text(json.dumps(RAMP))
    runner = CliRunner()
    out = runner.invoke(app, ["policy", "replay", "churn", "-f", str(good)])
    assert out.exit_code == 0, out.output
    assert "7 snapshots" in out.output
    assert out.output.count("advance_ramp") == 2 and "promote" in out.output
    out = runner.invoke(app, ["policy", "dry-run", "churn", "-f", str(good), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["snapshot_id"] > 0
    bad = tmp_path / "bad.json"
    bad.write_text('{"on_srm": "panic"}')
    out = runner.invoke(app, ["policy", "dry-run", "churn", "-f", str(bad)])
    assert out.exit_code == 2
    assert "policy.on_srm" in out.output
