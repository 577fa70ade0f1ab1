"""What a policy *would* decide, before it is saved: a dry run on the latest snapshot and a replay
over every snapshot of the experiment. Nothing is written: no decision, no weight epoch, no
outbox item; the experiment row is only read.

- **Dry run**: the candidate policy on the latest snapshot, for the experiment as it is now
  (status, weights, ramp step, recent decisions) -- what the next analysis would do with it.
- **Replay**: the candidate policy on every snapshot, oldest first, from the experiment's start.
  The simulated state (status, weights, weight epoch and when it began, retired variants, the
  decisions made so far) is threaded from one snapshot's action to the next: after a simulated
  ramp advance the next snapshots are judged at the new step, after a simulated rollback or
  promotion nothing more is decided. The statistics are the recorded ones: the replay assumes each
  snapshot was observed under the simulated split (its weight epoch is taken to be the simulated
  one), since the data that a different split would have produced does not exist.

The judgement itself is the engine's rule table (``abstats.engine.rules.decide``), called only
through ``_judge``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from abstats.analysis.service import latest_snapshot
from abstats.control import service
from abstats.db.models import AnalysisSnapshot, Decision, Experiment
from abstats.engine.rules import Action, ExperimentState, PastDecision, decide
from abstats.engine.snapshot import SnapshotResult
from abstats.engine.specs import Policy
from abstats.errors import Conflict
from abstats.experiments import repository
from abstats.experiments.state import HISTORY_DEPTH, experiment_state

POLICY_ACTOR = service.POLICY_ACTOR
_BATCH = 200  # snapshots read from the database at a time


def _judge(
    snapshot: SnapshotResult, policy: Policy, state: ExperimentState, snapshot_id: int
) -> Action:
    """The one call into the decision engine (re-point here when the engine moves)."""
    return decide(snapshot, policy, state, now=snapshot.cutoff, snapshot_id=snapshot_id)


@dataclass(frozen=True)
class SimulatedDecision:
    snapshot_id: int
    cutoff: datetime
    action: str
    reason: str
    applied: bool
    status_before: str
    status_after: str
    weights_before: dict[str, float]
    weights_after: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "cutoff": self.cutoff.isoformat(),
            "action": self.action,
            "reason": self.reason,
            "applied": self.applied,
            "status_before": self.status_before,
            "status_after": self.status_after,
            "weights_before": self.weights_before,
            "weights_after": self.weights_after,
        }


@dataclass(frozen=True)
class DryRun:
    experiment: str
    snapshot_id: int
    cutoff: datetime
    status: str
    weights: dict[str, float]
    action: Action

    def as_dict(self) -> dict[str, Any]:
        a = self.action
        return {
            "experiment": self.experiment,
            "snapshot_id": self.snapshot_id,
            "cutoff": self.cutoff.isoformat(),
            "status": self.status,
            "weights": self.weights,
            "action": a.kind,
            "reason": a.reason,
            "would_record": a.record,
            "new_status": a.new_status,
            "new_weights": a.new_weights,
            "winner": a.winner,
            "evidence": a.evidence,
        }


@dataclass
class Replay:
    experiment: str
    snapshots: int = 0
    first_cutoff: datetime | None = None
    last_cutoff: datetime | None = None
    decisions: list[SimulatedDecision] = field(default_factory=list)
    final_status: str = "draft"
    final_weights: dict[str, float] = field(default_factory=dict)
    actual: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "snapshots": self.snapshots,
            "first_cutoff": self.first_cutoff.isoformat() if self.first_cutoff else None,
            "last_cutoff": self.last_cutoff.isoformat() if self.last_cutoff else None,
            "decisions": [d.as_dict() for d in self.decisions],
            "final_status": self.final_status,
            "final_weights": self.final_weights,
            "actual_policy_decisions": self.actual,
        }


def dry_run(session: Session, key: str, body: Any) -> DryRun:
    """``body`` (a policy) on the latest snapshot, for the experiment as it is now."""
    experiment = repository.get_experiment(session, key)
    policy = service.validate_policy(experiment, body)
    row = latest_snapshot(session, experiment.id)
    if row is None:
        raise Conflict(
            f"Experiment {key!r} has no analysis snapshot yet: a dry run needs one "
            "(start the experiment, send events and wait for the next analysis)."
        )
    snapshot = SnapshotResult.model_validate(row.result)
    state = experiment_state(session, experiment)
    action = _judge(snapshot, policy, state, row.id)
    return DryRun(
        experiment=key,
        snapshot_id=row.id,
        cutoff=snapshot.cutoff,
        status=state.status,
        weights=dict(state.weights),
        action=action,
    )


def _snapshots(session: Session, experiment_id: int) -> Iterator[tuple[int, SnapshotResult]]:
    rows = session.execute(
        select(AnalysisSnapshot.id, AnalysisSnapshot.result)
        .where(AnalysisSnapshot.experiment_id == experiment_id)
        .order_by(AnalysisSnapshot.cutoff, AnalysisSnapshot.id)
        .execution_options(yield_per=_BATCH)
    )
    for snapshot_id, result in rows:
        yield snapshot_id, SnapshotResult.model_validate(result)


def initial_state(
    session: Session, experiment: Experiment, policy: Policy, started_at: datetime
) -> ExperimentState:
    """The experiment just after its start under ``policy``: running, at the first ramp step (or
    the declared weights of epoch 0), nothing retired, no decisions."""
    epochs = repository.weight_history(session, experiment.id)
    if not epochs:
        raise Conflict(f"Experiment {experiment.key!r} has no weight history.")
    declared = min(epochs, key=lambda e: e.epoch)
    weights, _ = service.start_weights(experiment, policy, as_created=True)
    return ExperimentState(
        status="running",
        control=experiment.control_variant,
        variants=tuple(v.key for v in experiment.variants),
        weights=weights or {k: float(w) for k, w in declared.weights.items()},
        weight_epoch=0,
        epoch_started_at=started_at,
        retired=frozenset(),
        history=(),
    )


def _advance(
    state: ExperimentState, action: Action, applied: bool, at: datetime
) -> ExperimentState:
    """The state after ``action`` (recorded at ``at``); a recommendation changes only the history."""
    past = PastDecision(
        action=action.kind,
        actor=POLICY_ACTOR,
        applied=applied,
        snapshot_id=action.evidence.get("snapshot_id"),
        status_after=(action.new_status or state.status) if applied else state.status,
        weights_after=dict(action.new_weights or state.weights),
        created_at=at,
    )
    history = (past, *state.history[: HISTORY_DEPTH - 1])
    if not applied:
        return replace(state, history=history)
    weights = dict(state.weights)
    epoch, began = state.weight_epoch, state.epoch_started_at
    if action.new_weights is not None and action.new_weights != weights:
        weights, epoch, began = dict(action.new_weights), epoch + 1, at
    return replace(
        state,
        status=action.new_status or state.status,
        weights=weights,
        weight_epoch=epoch,
        epoch_started_at=began,
        epoch_confirmed_at=None if epoch != state.weight_epoch else state.epoch_confirmed_at,
        epoch_pending=False,
        retired=state.retired | frozenset(action.retire),
        history=history,
    )


def replay(session: Session, key: str, body: Any) -> Replay:
    """``body`` (a policy) on every snapshot of ``key``, oldest first (see the module docstring)."""
    experiment = repository.get_experiment(session, key)
    policy = service.validate_policy(experiment, body)
    out = Replay(experiment=key)
    state: ExperimentState | None = None
    for snapshot_id, snapshot in _snapshots(session, experiment.id):
        out.snapshots += 1
        out.first_cutoff = out.first_cutoff or snapshot.cutoff
        out.last_cutoff = snapshot.cutoff
        if state is None:
            started = experiment.started_at or datetime.fromtimestamp(
                snapshot.cutoff.timestamp() - snapshot.runtime_seconds, tz=UTC
            )
            state = initial_state(session, experiment, policy, started)
        observed = snapshot.model_copy(update={"weight_epoch": state.weight_epoch})
        action = _judge(observed, policy, state, snapshot_id)
        if not action.record or policy.mode == "off":
            continue
        applied = policy.mode == "auto"
        after = _advance(state, action, applied, snapshot.cutoff)
        out.decisions.append(
            SimulatedDecision(
                snapshot_id=snapshot_id,
                cutoff=snapshot.cutoff,
                action=action.kind,
                reason=action.reason,
                applied=applied,
                status_before=state.status,
                status_after=after.status,
                weights_before=dict(state.weights),
                weights_after=dict(after.weights),
            )
        )
        state = after
    if state is not None:
        out.final_status, out.final_weights = state.status, dict(state.weights)
    else:
        out.final_status = experiment.status
    out.actual = [
        {
            "snapshot_id": d.snapshot_id,
            "created_at": d.created_at.isoformat(),
            "action": d.action,
            "reason": d.reason,
            "applied": d.applied,
        }
        for d in session.scalars(
            select(Decision)
            .where(Decision.experiment_id == experiment.id, Decision.actor == POLICY_ACTOR)
            .order_by(Decision.id)
        )
    ]
    return out
