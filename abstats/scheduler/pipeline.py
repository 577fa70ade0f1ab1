"""The scheduler's pipeline for one experiment: analysis -> decision step -> reports, in that
order, each in its own transaction (a failing report never undoes a decision, a failing decision
never undoes a snapshot)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from abstats.analysis.drift import run_drift
from abstats.analysis.service import run_analysis
from abstats.control.service import evaluate_snapshot
from abstats.db.engine import session_scope
from abstats.db.models import AnalysisSnapshot, Decision
from abstats.experiments import repository
from abstats.integrations import mlflow as mlflow_integration
from abstats.logging import get_logger
from abstats.reports.service import write_reports

log = get_logger(__name__)


@dataclass
class PipelineResult:
    snapshot: AnalysisSnapshot
    created: bool
    decisions: list[Decision] = field(default_factory=list)
    report: Path | None = None


def run_pipeline(key: str, *, wait_seconds: float = 5.0) -> PipelineResult:
    """Analyse ``key`` now, hand a new snapshot to the decision step, then render reports.

    Idempotent: with no new events the latest snapshot is returned and no decision step runs
    again on it."""
    with session_scope() as session:
        run = run_analysis(session, key, wait_seconds=wait_seconds)
    result = PipelineResult(run.snapshot, run.created)
    if run.created:
        with session_scope() as session:
            result.decisions = decide(session, key, run.snapshot.id)
            experiment = repository.get_experiment(session, key)
            mlflow_integration.enqueue_analysis_log(session, experiment, run.snapshot.id)
    try:
        with session_scope() as session:
            result.report = write_reports(session, key)
    except Exception:  # reports are derived output: log, never fail the pipeline
        log.exception("pipeline.reports_failed", experiment=key)
    return result


def decide(session: Session, key: str, snapshot_id: int) -> list[Decision]:
    experiment = repository.get_experiment(session, key, for_update=True)
    snapshot = session.get(AnalysisSnapshot, snapshot_id)
    if snapshot is None:  # deleted with its experiment in between
        return []
    return evaluate_snapshot(session, experiment, snapshot).decisions


def run_drift_job(key: str) -> int:
    """One drift window for ``key``; returns the number of checks made."""
    with session_scope() as session:
        return len(run_drift(session, key))


def running_experiments() -> list[str]:
    with session_scope() as session:
        return repository.running_experiment_keys(session)
