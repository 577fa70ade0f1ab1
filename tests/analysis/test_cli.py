"""`abstats analysis run` and `abstats analysis rebuild` against a real database."""

from __future__ import annotations

import json

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from abstats.cli import app

from .conftest import make_experiment, write_events
from .test_rollup import EPOCH1, METRICS, T0, generate


def test_run_then_rebuild_agrees_exactly(committed_engine: Engine) -> None:
    rng = np.random.default_rng(3)
    with Session(committed_engine) as session:
        experiment = make_experiment(
            session,
            metrics=METRICS,
            key="cli-exp",
            epochs=[(T0, {"control": 1, "treatment": 1}), (EPOCH1, {"control": 1, "treatment": 4})],
        )
        first = generate(rng, 150, "a", 0)
        write_events(session, experiment, first)
        session.commit()
    runner = CliRunner()
    ran = runner.invoke(app, ["analysis", "run", "cli-exp"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout.strip().splitlines()[-1])["created"] is True
    with Session(committed_engine) as session:  # more events, incl. late labels
        experiment = session.merge(experiment)
        second = generate(rng, 80, "b", 20)
        write_events(session, experiment, second)
        session.commit()
    assert runner.invoke(app, ["analysis", "run", "cli-exp"]).exit_code == 0
    rebuilt = runner.invoke(app, ["analysis", "rebuild", "cli-exp"])
    assert rebuilt.exit_code == 0, rebuilt.output
    report = json.loads(rebuilt.stdout.strip().splitlines()[-1])
    assert report["identical"] is True and report["differing_tables"] == []
    seen = {e["unit_id"] for ev in (first, second) for e in ev.exposures + ev.predictions}
    assert report["rows_read"]["units"] == len(seen)  # every unit folded once, from scratch


def test_unknown_experiment_is_a_clear_error(committed_engine: Engine) -> None:
    result = CliRunner().invoke(app, ["analysis", "rebuild", "nope"])
    assert result.exit_code == 2
    assert "No experiment with key 'nope'" in result.output
