"""Control use cases: the policy's decision step after each snapshot, and manual control.

Every change goes through ``abstats.experiments.state.change_state`` (decision row + weight epoch
+ outbox items in the caller's transaction); only the edges (request dependency, scheduler job)
commit. Router calls and notifications are delivered afterwards by ``abstats.control.outbox``.

Routing while not running: a paused, rolled-back or draft experiment routes everything to the
control and a concluded one to its winner (``effective_weights``); pausing and resuming send that
to the router without opening a weight epoch, since the planned weights did not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from abstats.control.assign import config_cache
from abstats.db.models import AnalysisSnapshot, Decision, Experiment, OutboxItem
from abstats.engine import ramp
from abstats.engine.rules import Action, decide
from abstats.engine.snapshot import SnapshotResult
from abstats.engine.specs import Policy
from abstats.errors import Conflict, FieldProblem, InvalidInput
from abstats.experiments import repository
from abstats.experiments.schemas import policy_problems, raise_problems, validation_problems
from abstats.experiments.state import (
    StateChange,
    change_state,
    current_weights,
    experiment_spec,
    experiment_state,
    validate_weights,
)
from abstats.logging import get_logger

POLICY_ACTOR = "policy"
_log = get_logger(__name__)


def effective_weights(experiment: Experiment, weights: dict[str, float]) -> dict[str, float]:
    """What the router should apply: the planned weights while running, else all to one variant."""
    keys = [v.key for v in experiment.variants]
    if experiment.status == "running":
        return weights
    if experiment.status == "concluded" and experiment.winner_variant:
        return ramp.all_to(experiment.winner_variant, keys)
    return ramp.all_to(experiment.control_variant, keys)


def enqueue_router(
    session: Session, experiment: Experiment, decision: Decision, weights: dict[str, float]
) -> None:
    session.add(
        OutboxItem(
            experiment_id=experiment.id,
            decision_id=decision.id,
            kind="router",
            payload={"weights": weights, "router": experiment.router},
        )
    )
    session.flush()


@dataclass(frozen=True)
class StepOutcome:
    """The action the policy chose on a snapshot and the decision rows it produced."""

    action: Action
    decisions: list[Decision]


def evaluate_snapshot(
    session: Session,
    experiment: Experiment,
    snapshot: AnalysisSnapshot,
    *,
    now: datetime | None = None,
) -> StepOutcome:
    """Decide on ``snapshot`` and record (mode recommend) or apply (mode auto) the action.

    Idempotent: a snapshot that already produced a decision produces nothing more, so a re-run of
    the pipeline (or a second scheduler) cannot apply an action twice.
    """
    now = now or datetime.now(UTC)
    session.refresh(experiment, with_for_update=True)  # serialise decision steps per experiment
    policy = experiment_spec(experiment).policy
    result = SnapshotResult.model_validate(snapshot.result)
    state = experiment_state(session, experiment)
    action = decide(result, policy, state, now=now, snapshot_id=snapshot.id)
    already = session.scalar(
        select(
            exists().where(
                Decision.snapshot_id == snapshot.id, Decision.experiment_id == experiment.id
            )
        )
    )
    if already or not action.record or policy.mode == "off":
        return StepOutcome(action, [])
    applied = policy.mode == "auto"
    decision = change_state(
        session,
        experiment,
        StateChange(
            action=action.kind,
            actor=POLICY_ACTOR,
            reason=action.reason,
            new_status=action.new_status,
            new_weights=action.new_weights,
            snapshot_id=snapshot.id,
            evidence=action.evidence,
            applied=applied,
            winner=action.winner,
            retire=action.retire,
        ),
        now=now,
    )
    if applied and action.kind == "pause":
        enqueue_router(
            session, experiment, decision, effective_weights(experiment, dict(state.weights))
        )
    config_cache.invalidate(experiment.key)
    _log.info(
        "policy decision",
        experiment=experiment.key,
        action=action.kind,
        applied=applied,
        decision_id=decision.id,
    )
    return StepOutcome(action, [decision])


# --- manual control ----------------------------------------------------------------------------


def _reason(reason: str | None, default: str) -> str:
    return reason.strip() if reason and reason.strip() else default


def start_weights(
    experiment: Experiment, policy: Policy, *, as_created: bool = False
) -> tuple[dict[str, float] | None, list[float]]:
    """The weights a start sets (None: keep the declared ones) and the policy's ramp steps.
    ``as_created``: as if no variant had been retired since (a replay from the start)."""
    steps = (
        ramp.ramp_steps(policy.ramp) if policy.ramp is not None and policy.bandit is None else []
    )
    if not steps:
        return None, []
    candidates = [
        v.key
        for v in experiment.variants
        if v.key != experiment.control_variant and (as_created or not v.retired)
    ]
    return ramp.weights_for_step(steps[0], experiment.control_variant, candidates), steps


def start(session: Session, key: str, *, actor: str, reason: str | None = None) -> Decision:
    """draft -> running. With a ramp, the candidates start at the first ramp step (split equally
    among them, see ``abstats.engine.ramp``)."""
    experiment = repository.get_experiment(session, key, for_update=True)
    if experiment.status != "draft":
        raise Conflict(
            f"Experiment {key!r} is {experiment.status}; only a draft can be started"
            + (" (use /resume for a paused one)." if experiment.status == "paused" else ".")
        )
    policy = experiment_spec(experiment).policy
    weights = current_weights(session, experiment)
    new_weights, steps = start_weights(experiment, policy)
    evidence: dict[str, Any] = {"ramp_step": steps[0]} if steps else {}
    decision = change_state(
        session,
        experiment,
        StateChange(
            action="start",
            actor=actor,
            reason=_reason(reason, f"started{f' at ramp step {steps[0]:g}%' if steps else ''}"),
            new_status="running",
            new_weights=new_weights,
            evidence=evidence,
        ),
    )
    if new_weights is None:  # no epoch change, but external routers still need the split
        enqueue_router(session, experiment, decision, weights)
    config_cache.invalidate(key)
    return decision


def pause(session: Session, key: str, *, actor: str, reason: str | None = None) -> Decision:
    experiment = repository.get_experiment(session, key, for_update=True)
    if experiment.status != "running":
        raise Conflict(
            f"Experiment {key!r} is {experiment.status}; only a running experiment can be paused."
        )
    weights = current_weights(session, experiment)
    decision = change_state(
        session,
        experiment,
        StateChange(
            action="pause",
            actor=actor,
            reason=_reason(reason, "paused by hand"),
            new_status="paused",
        ),
    )
    enqueue_router(session, experiment, decision, effective_weights(experiment, weights))
    config_cache.invalidate(key)
    return decision


def resume(session: Session, key: str, *, actor: str, reason: str | None = None) -> Decision:
    experiment = repository.get_experiment(session, key, for_update=True)
    if experiment.status != "paused":
        raise Conflict(
            f"Experiment {key!r} is {experiment.status}; only a paused experiment can be resumed."
        )
    weights = current_weights(session, experiment)
    decision = change_state(
        session,
        experiment,
        StateChange(
            action="resume",
            actor=actor,
            reason=_reason(reason, "resumed by hand"),
            new_status="running",
        ),
    )
    enqueue_router(session, experiment, decision, weights)
    config_cache.invalidate(key)
    return decision


def _require_active(experiment: Experiment, what: str) -> None:
    if experiment.status in ("concluded", "rolled_back"):
        raise Conflict(
            f"Experiment {experiment.key!r} is {experiment.status}; {what} is only possible while it "
            "is draft, running or paused. Create a new experiment to test again."
        )


def set_weights(
    session: Session, key: str, weights: dict[str, Any], *, actor: str, reason: str | None = None
) -> Decision:
    """Manual reweight. The ramp continues from the step nearest to the new candidate share."""
    experiment = repository.get_experiment(session, key, for_update=True)
    _require_active(experiment, "a reweight")
    keys = [v.key for v in experiment.variants]
    full = validate_weights(weights, keys)
    retired = [v.key for v in experiment.variants if v.retired and full.get(v.key, 0) > 0]
    if retired:
        raise InvalidInput(
            f"Variant(s) {', '.join(retired)} are retired and cannot get traffic.",
            errors=[FieldProblem(f"weights.{v}", "retired variant: set 0") for v in retired],
        )
    policy = experiment_spec(experiment).policy
    evidence: dict[str, Any] = {}
    if policy.ramp is not None:
        candidates = [k for k in keys if k != experiment.control_variant]
        index = ramp.nearest_step_index(policy.ramp, ramp.candidate_share(full, candidates))
        if index is not None:
            evidence["ramp_step"] = ramp.ramp_steps(policy.ramp)[index]
    decision = change_state(
        session,
        experiment,
        StateChange(
            action="reweight",
            actor=actor,
            reason=_reason(reason, "reweighted by hand"),
            new_weights=full,
            evidence=evidence,
        ),
        enqueue_router=experiment.status == "running",
    )
    config_cache.invalidate(key)
    return decision


def promote(
    session: Session, key: str, variant: str, *, actor: str, reason: str | None = None
) -> Decision:
    experiment = repository.get_experiment(session, key, for_update=True)
    _require_active(experiment, "a promotion")
    keys = [v.key for v in experiment.variants]
    if variant not in keys:
        raise InvalidInput(
            f"Unknown variant {variant!r}; known: {', '.join(keys)}.",
            errors=[FieldProblem("variant", f"must be one of {', '.join(keys)}")],
        )
    if experiment.status == "draft":
        raise Conflict(f"Experiment {key!r} is a draft; start it before promoting a variant.")
    policy = experiment_spec(experiment).policy
    retire = tuple(k for k in keys if k != variant) if policy.cleanup.retire_losers else ()
    decision = change_state(
        session,
        experiment,
        StateChange(
            action="promote",
            actor=actor,
            reason=_reason(reason, f"{variant} promoted by hand"),
            new_status="concluded",
            new_weights=ramp.all_to(variant, keys),
            winner=variant,
            retire=retire,
        ),
    )
    config_cache.invalidate(key)
    return decision


def rollback(session: Session, key: str, *, actor: str, reason: str | None = None) -> Decision:
    experiment = repository.get_experiment(session, key, for_update=True)
    _require_active(experiment, "a rollback")
    if experiment.status == "draft":
        raise Conflict(f"Experiment {key!r} is a draft; there is nothing to roll back.")
    keys = [v.key for v in experiment.variants]
    decision = change_state(
        session,
        experiment,
        StateChange(
            action="rollback",
            actor=actor,
            reason=_reason(reason, "rolled back by hand"),
            new_status="rolled_back",
            new_weights=ramp.all_to(experiment.control_variant, keys),
        ),
    )
    config_cache.invalidate(key)
    return decision


def get_policy(session: Session, key: str) -> dict[str, Any]:
    experiment = repository.get_experiment(session, key)
    return experiment_spec(experiment).policy.model_dump(mode="json")


def put_policy(session: Session, key: str, body: Any) -> dict[str, Any]:
    """Replace the policy; 422 with field paths (``policy.ramp.steps``) when invalid."""
    experiment = repository.get_experiment(session, key, for_update=True)
    policy = validate_policy(experiment, body)
    experiment.policy = policy.model_dump(mode="json")
    experiment.updated_at = datetime.now(UTC)
    session.flush()
    return experiment.policy


def validate_policy(experiment: Experiment, body: Any) -> Policy:
    """``body`` as a policy of ``experiment``; 422 listing every invalid field
    (``policy.ramp.steps``), the same for a PUT, a dry run and a replay."""
    if not isinstance(body, dict):
        raise InvalidInput(
            "The body must be a JSON object: the policy (see README, section Policy).",
            errors=[FieldProblem("policy", "must be a JSON object")],
        )
    try:
        policy = Policy.model_validate(body)
    except ValidationError as exc:
        problems = [
            FieldProblem(f"policy.{p.field}" if p.field != "body" else "policy", p.message)
            for p in validation_problems(exc, Policy)
        ]
        raise_problems("policy", problems)
        raise  # unreachable: raise_problems raised
    spec = experiment_spec(experiment)
    raise_problems("policy", policy_problems(policy, list(spec.metrics), len(spec.variants)))
    return policy


def list_decisions(
    session: Session, key: str, *, limit: int, starting_after: int | None
) -> tuple[list[Decision], bool]:
    experiment = repository.get_experiment(session, key)
    rows = list(
        repository.list_decisions(session, experiment.id, limit=limit + 1, before_id=starting_after)
    )
    return rows[:limit], len(rows) > limit
