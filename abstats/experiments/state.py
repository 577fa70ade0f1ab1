"""Changing an experiment's status or weights: always through ``change_state``, which writes the
decision row, the new weight epoch and the experiment row in the caller's transaction, so they
commit together (or not at all). Router calls and notifications are delivered afterwards from the
outbox (``abstats.control``), keyed by the decision id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from abstats.db.models import Decision, Experiment, OutboxItem
from abstats.engine.rules import ExperimentState, PastDecision
from abstats.engine.specs import ExperimentSpec, SpecProblems
from abstats.errors import Conflict, FieldProblem, InvalidInput
from abstats.experiments import repository

# How many past decisions the rule table sees (it looks at the newest only, to drop repeats).
HISTORY_DEPTH = 20

# Allowed status transitions (docs/concepts.md): draft -> running <-> paused -> concluded | rolled_back
TRANSITIONS: dict[str, set[str]] = {
    "draft": {"running"},
    "running": {"paused", "concluded", "rolled_back"},
    "paused": {"running", "concluded", "rolled_back"},
    "concluded": set(),
    "rolled_back": set(),
}


def experiment_spec(experiment: Experiment) -> ExperimentSpec:
    """The stored experiment as the engine reads it, parsed once per run; a 422 naming every
    field that no longer validates."""
    try:
        return ExperimentSpec.parse(
            key=experiment.key,
            control=experiment.control_variant,
            variants=[v.key for v in experiment.variants],
            retired=[v.key for v in experiment.variants if v.retired],
            metrics=experiment.metrics or [],
            policy=experiment.policy or {},
        )
    except SpecProblems as exc:
        raise InvalidInput(
            str(exc), errors=[FieldProblem(field, message) for field, message in exc.problems]
        ) from exc


def experiment_state(
    session: Session,
    experiment: Experiment,
    *,
    confirmations: Mapping[int, datetime | None] | None = None,
) -> ExperimentState:
    """Status, current weights and epoch, retired variants and recent decisions: what the rule
    table needs to know of the experiment besides its snapshot. ``confirmations``: the result of
    ``repository.epoch_confirmations`` when the caller has read it already."""
    epoch = repository.current_epoch(session, experiment.id)
    if epoch is None:
        raise Conflict(f"Experiment {experiment.key!r} has no weight history; start it first.")
    history = [
        PastDecision(
            action=d.action,
            actor=d.actor,
            applied=d.applied,
            snapshot_id=d.snapshot_id,
            status_after=d.status_after,
            weights_after=d.weights_after,
            created_at=d.created_at,
        )
        for d in repository.list_decisions(session, experiment.id, limit=HISTORY_DEPTH)
    ]
    if confirmations is None:
        confirmations = repository.epoch_confirmations(session, experiment.id)
    confirmed = confirmations.get(epoch.epoch, epoch.started_at)
    return ExperimentState(
        status=experiment.status,
        control=experiment.control_variant,
        variants=tuple(v.key for v in experiment.variants),
        weights={k: float(w) for k, w in epoch.weights.items()},
        weight_epoch=epoch.epoch,
        epoch_started_at=epoch.started_at,
        retired=frozenset(v.key for v in experiment.variants if v.retired),
        history=tuple(history),
        epoch_confirmed_at=confirmed,
        epoch_pending=confirmed is None,
    )


@dataclass(frozen=True)
class StateChange:
    action: str  # start, pause, resume, reweight, promote, rollback, advance_ramp, ...
    actor: str  # "policy" or "key:<id>"
    reason: str
    new_status: str | None = None
    new_weights: dict[str, float] | None = None
    snapshot_id: int | None = None
    evidence: dict[str, Any] | None = None
    applied: bool = True  # False: recorded as a recommendation only (policy mode "recommend")
    winner: str | None = None
    retire: tuple[str, ...] = ()


def validate_weights(
    weights: dict[str, float], variants: list[str], *, field: str = "weights"
) -> dict[str, float]:
    """Non-negative numbers for known variants, at least one positive; missing variants get 0."""
    problems: list[FieldProblem] = []
    for name, value in weights.items():
        if name not in variants:
            problems.append(
                FieldProblem(f"{field}.{name}", f"unknown variant; known: {', '.join(variants)}")
            )
        elif (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or value != value
            or value in (float("inf"), float("-inf"))
        ):
            problems.append(FieldProblem(f"{field}.{name}", "must be a finite number"))
        elif value < 0:
            problems.append(FieldProblem(f"{field}.{name}", "must be >= 0"))
    if problems:
        raise InvalidInput(
            "Invalid weights: " + "; ".join(f"{p.field}: {p.message}" for p in problems),
            errors=problems,
        )
    full = {v: float(weights.get(v, 0.0)) for v in variants}
    if sum(full.values()) <= 0:
        raise InvalidInput(
            "At least one weight must be positive.",
            errors=[FieldProblem(field, "all weights are 0")],
        )
    return full


def current_weights(session: Session, experiment: Experiment) -> dict[str, float]:
    """The latest weight epoch's weights (epoch 0 is opened when the experiment is created)."""
    epoch = repository.current_epoch(session, experiment.id)
    if epoch is None:
        raise Conflict(
            f"Experiment {experiment.key!r} has no weight history; it was not created through the registry."
        )
    return {k: float(v) for k, v in epoch.weights.items()}


# decisions that the MLflow integration acts on: resolve the variants' registered models at start,
# set the alias and verdict tags at a promotion or rollback
MLFLOW_ACTIONS = {"start": "resolve", "promote": "verdict", "rollback": "verdict"}


def change_state(
    session: Session,
    experiment: Experiment,
    change: StateChange,
    *,
    now: datetime | None = None,
    enqueue_router: bool = True,
) -> Decision:
    """Record ``change`` as a decision and, when applied, apply it to the experiment.

    The caller holds the experiment row (``get_experiment(..., for_update=True)``) and commits.
    """
    now = now or datetime.now(UTC)
    status_before = experiment.status
    weights_before = current_weights(session, experiment)
    if (
        change.new_status is not None
        and change.new_status != status_before
        and change.new_status not in TRANSITIONS[status_before]
    ):
        raise Conflict(
            f"Cannot {change.action} an experiment that is {status_before!r}"
            f" (allowed from {status_before!r}: {sorted(TRANSITIONS[status_before]) or 'none'})."
        )
    weights_after = None
    if change.new_weights is not None:
        weights_after = validate_weights(change.new_weights, [v.key for v in experiment.variants])

    decision = repository.add_decision(
        session,
        experiment_id=experiment.id,
        snapshot_id=change.snapshot_id,
        action=change.action,
        actor=change.actor,
        reason=change.reason,
        applied=change.applied,
        status_before=status_before,
        status_after=change.new_status or status_before,
        weights_before=weights_before,
        weights_after=weights_after or weights_before,
        evidence=change.evidence or {},
        created_at=now,
    )
    if not change.applied:
        return decision

    if change.new_status is not None and change.new_status != status_before:
        experiment.status = change.new_status
        if change.new_status == "running" and experiment.started_at is None:
            experiment.started_at = now
        if change.new_status in ("concluded", "rolled_back"):
            experiment.ended_at = now
    if change.winner is not None:
        experiment.winner_variant = change.winner
    for variant in experiment.variants:
        if variant.key in change.retire:
            variant.retired = True
    if weights_after is not None and weights_after != weights_before:
        repository.open_epoch(
            session, experiment.id, weights_after, at=now, decision_id=decision.id
        )
        if enqueue_router:
            session.add(
                OutboxItem(
                    experiment_id=experiment.id,
                    decision_id=decision.id,
                    kind="router",
                    payload={"weights": weights_after, "router": experiment.router},
                )
            )
    if (experiment.integrations or {}).get("mlflow") and change.action in MLFLOW_ACTIONS:
        # the registry calls happen after the commit (abstats.integrations.mlflow via the outbox)
        session.add(
            OutboxItem(
                experiment_id=experiment.id,
                decision_id=decision.id,
                kind="mlflow",
                payload={"op": MLFLOW_ACTIONS[change.action]},
            )
        )
    if experiment.notifications.get("webhook_url"):
        session.add(
            OutboxItem(
                experiment_id=experiment.id, decision_id=decision.id, kind="notify", payload={}
            )
        )
    experiment.updated_at = now
    session.flush()
    return decision
