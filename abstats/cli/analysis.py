"""``abstats analysis run KEY`` and ``abstats analysis rebuild KEY``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import typer

from abstats.cli.main import app, fail
from abstats.errors import AbstatsError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# The analysis modules (scipy, statsmodels) are imported by the commands that use them, so that
# every other command of the CLI starts without them.

analysis_app = typer.Typer(help="Analysis snapshots and rollups.", no_args_is_help=True)
app.add_typer(analysis_app, name="analysis")


@analysis_app.command("run")
def run(key: str = typer.Argument(..., help="Experiment key.")) -> None:
    """Run the pipeline now (analysis, decision step, reports); prints the snapshot as JSON."""
    from abstats.scheduler.pipeline import run_pipeline

    try:
        result = run_pipeline(key)
    except AbstatsError as exc:
        fail(exc.detail)
        return
    snapshot = result.snapshot
    typer.echo(
        orjson.dumps(
            {
                "snapshot_id": snapshot.id,
                "created": result.created,
                "cutoff": snapshot.cutoff,
                "recommendation": snapshot.recommendation,
                "reason": snapshot.result.get("reason", ""),
                "decisions": [d.action for d in result.decisions],
            }
        ).decode()
    )


def rollup_digest(session: Session, experiment_id: int) -> dict[str, str]:
    """md5 of every rollup row of the experiment, per table (an exact fingerprint)."""
    from sqlalchemy import text

    from abstats.analysis.rollup import ROLLUP_TABLES

    return {
        table: session.execute(
            text(
                f"SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY {order})), '') "
                f"FROM {table} t WHERE experiment_id = :e"
            ),
            {"e": experiment_id},
        ).scalar_one()
        for table, order in ROLLUP_TABLES.items()
    }


@analysis_app.command("rebuild")
def rebuild(key: str = typer.Argument(..., help="Experiment key.")) -> None:
    """Recompute the experiment's rollups from every event and check that they equal the
    incremental ones (up to the same watermark); exits 1 if they differ."""
    from abstats.analysis.rollup import (
        ROLLUP_TABLES,
        RollupPlan,
        clear_rollups,
        lock_analysis,
        roll_up,
    )
    from abstats.db.engine import session_scope
    from abstats.experiments import repository
    from abstats.experiments.state import experiment_spec

    try:
        with session_scope() as session:
            experiment = repository.get_experiment(session, key)
            plan = RollupPlan.from_metrics(list(experiment_spec(experiment).metrics))
            lock_analysis(session, experiment.id)
            incremental = roll_up(session, experiment.id, plan).current  # up to date first
            before = rollup_digest(session, experiment.id)
            clear_rollups(session, experiment.id)
            rebuilt = roll_up(
                session,
                experiment.id,
                plan,
                until=(incremental.exposure_id, incremental.prediction_id, incremental.outcome_id),
            )
            after = rollup_digest(session, experiment.id)
    except AbstatsError as exc:
        fail(exc.detail)
        return
    differing = sorted(t for t in ROLLUP_TABLES if before[t] != after[t])
    typer.echo(
        orjson.dumps(
            {
                "experiment": key,
                "rows_read": rebuilt.rows_read,
                "identical": not differing,
                "differing_tables": differing,
            }
        ).decode()
    )
    if differing:
        fail(
            "rebuilt rollups differ from the incremental ones in "
            + ", ".join(differing)
            + " (events may have arrived in between: run rebuild again)",
            code=1,
        )
