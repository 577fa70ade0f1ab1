"""Delivering outbox items after their decision committed: router calls and notifications.

Each item is claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` in its own transaction, delivered,
and marked done in that transaction, so two schedulers never deliver the same item at once and a
crash before the commit only means one more (idempotent) attempt:

- router: apply the weights through the experiment's backend, read them back and store the result
  on the decision (``router_result``). Applying a weight vector is idempotent, and an item is
  skipped when a newer router item of the same experiment exists (the newer weights win), so a
  late retry never rolls the router back to an old split. After ``max_router_attempts`` failures
  (or at once for a ``PermanentRouterError`` such as a rejected ``nginx -t``) the experiment is
  paused by a decision that carries the error.
- mlflow: the MLflow registry and tracking calls of an experiment with ``integrations.mlflow``
  (``abstats.integrations.mlflow``: resolve the variants' models at start, alias and verdict tags
  at a promotion or rollback, log an analysis), retried like notifications; a failure never
  touches the experiment, it is kept in ``last_error``.
- notify: POST the decision as JSON to the experiment's webhook, signed with HMAC-SHA256
  (``abstats.control.signing``), with a delivery id that stays the same across retries. Retried
  with exponential backoff until a 2xx or ``max_notify_attempts``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import exists, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from abstats.config import get_settings
from abstats.control.assign import config_cache
from abstats.control.routers import PermanentRouterError, get_router
from abstats.control.signing import DELIVERY_HEADER, SIGNATURE_HEADER, sign
from abstats.db.models import Decision, Experiment, OutboxItem
from abstats.errors import AbstatsError, RouterError
from abstats.experiments import repository
from abstats.experiments.state import StateChange, change_state
from abstats.experiments.targets import notification_problems
from abstats.integrations import mlflow as mlflow_integration
from abstats.logging import get_logger

MAX_ROUTER_ATTEMPTS = 5
MAX_NOTIFY_ATTEMPTS = 10
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 300.0
HTTP_TIMEOUT_SECONDS = 10.0
_log = get_logger(__name__)


def backoff(attempts: int, *, base: float = BACKOFF_BASE_SECONDS) -> timedelta:
    """Delay before attempt ``attempts + 1``: base * 2^(attempts - 1), capped."""
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), BACKOFF_CAP_SECONDS))


def decision_payload(experiment: Experiment, decision: Decision) -> dict[str, Any]:
    return {
        "type": "decision",
        "experiment": experiment.key,
        "decision": {
            "id": decision.id,
            "action": decision.action,
            "actor": decision.actor,
            "reason": decision.reason,
            "applied": decision.applied,
            "status_before": decision.status_before,
            "status_after": decision.status_after,
            "weights_before": decision.weights_before,
            "weights_after": decision.weights_after,
            "snapshot_id": decision.snapshot_id,
            "evidence": decision.evidence,
            "created_at": decision.created_at.isoformat(),
        },
    }


def deliver_pending(
    engine: Engine,
    *,
    now: datetime | None = None,
    limit: int = 100,
    max_router_attempts: int = MAX_ROUTER_ATTEMPTS,
    max_notify_attempts: int = MAX_NOTIFY_ATTEMPTS,
    backoff_base: float = BACKOFF_BASE_SECONDS,
) -> int:
    """Deliver due outbox items (at most ``limit``); returns how many were delivered."""
    delivered = 0
    seen: set[int] = set()
    for _ in range(limit):
        clock = now or datetime.now(UTC)
        with Session(engine, expire_on_commit=False) as session, session.begin():
            stmt = (
                select(OutboxItem)
                .where(OutboxItem.done_at.is_(None), OutboxItem.next_attempt_at <= clock)
                .order_by(OutboxItem.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if seen:
                stmt = stmt.where(OutboxItem.id.not_in(seen))
            item = session.scalars(stmt).first()
            if item is None:
                break
            seen.add(item.id)
            if item.kind == "router":
                ok = _deliver_router(
                    session,
                    item,
                    clock,
                    max_attempts=max_router_attempts,
                    backoff_base=backoff_base,
                )
            elif item.kind == mlflow_integration.OUTBOX_KIND:
                ok = _deliver_mlflow(
                    session,
                    item,
                    clock,
                    max_attempts=max_notify_attempts,
                    backoff_base=backoff_base,
                )
            else:
                ok = _deliver_notify(
                    session,
                    item,
                    clock,
                    max_attempts=max_notify_attempts,
                    backoff_base=backoff_base,
                )
            delivered += int(ok)
    return delivered


def _deliver_router(
    session: Session, item: OutboxItem, now: datetime, *, max_attempts: int, backoff_base: float
) -> bool:
    newer = session.scalar(
        select(
            exists().where(
                OutboxItem.experiment_id == item.experiment_id,
                OutboxItem.kind == "router",
                OutboxItem.id > item.id,
            )
        )
    )
    if newer:
        item.done_at = now
        item.last_error = "superseded by a newer router call of the same experiment"
        return False
    experiment = session.get(Experiment, item.experiment_id)
    decision = session.get(Decision, item.decision_id) if item.decision_id else None
    if experiment is None:
        item.done_at = now
        return False
    weights = {k: float(v) for k, v in item.payload["weights"].items()}
    item.attempts += 1
    try:
        router = get_router(experiment.router or {}, experiment=experiment.key)
        result = router.apply(weights)
    except PermanentRouterError as exc:
        _router_failed(session, experiment, decision, item, now, exc.detail)
        return False
    except (RouterError, AbstatsError) as exc:
        return _retry_or_fail(
            session, experiment, decision, item, now, exc.detail, max_attempts, backoff_base
        )
    except Exception as exc:  # a backend bug is a router failure too, never a stuck outbox
        message = f"{type(exc).__name__}: {exc}"
        return _retry_or_fail(
            session, experiment, decision, item, now, message, max_attempts, backoff_base
        )
    item.done_at = now
    item.last_error = None
    if decision is not None:
        decision.router_result = {
            **result.as_dict(),
            "attempts": item.attempts,
            "outbox_id": item.id,
        }
    _log.info("router applied", experiment=experiment.key, backend=result.backend, weights=weights)
    return True


def _retry_or_fail(
    session: Session,
    experiment: Experiment,
    decision: Decision | None,
    item: OutboxItem,
    now: datetime,
    message: str,
    max_attempts: int,
    backoff_base: float,
) -> bool:
    item.last_error = message
    if item.attempts >= max_attempts:
        _router_failed(
            session, experiment, decision, item, now, f"{message} (after {item.attempts} attempts)"
        )
    else:
        item.next_attempt_at = now + backoff(item.attempts, base=backoff_base)
        _log.warning(
            "router call failed, will retry",
            experiment=experiment.key,
            error=message,
            attempts=item.attempts,
        )
    return False


def _router_failed(
    session: Session,
    experiment: Experiment,
    decision: Decision | None,
    item: OutboxItem,
    now: datetime,
    message: str,
) -> None:
    """Give up on a router call: record the error and pause the experiment with it."""
    item.done_at = now
    item.last_error = message
    if decision is not None:
        decision.router_result = {"error": message, "attempts": item.attempts, "outbox_id": item.id}
    locked = repository.get_experiment(session, experiment.key, for_update=True)
    evidence = {
        "trigger": "router_failure",
        "outbox_id": item.id,
        "decision_id": item.decision_id,
        "attempted_weights": item.payload.get("weights"),
        "error": message,
    }
    if locked.status == "running":
        change = StateChange(
            action="pause",
            actor="policy",
            reason=f"router failure: {message}",
            new_status="paused",
            evidence=evidence,
        )
    else:  # a promotion or rollback that did not reach the router: recorded, nothing to pause
        change = StateChange(
            action="router_failed",
            actor="policy",
            reason=f"router failure: {message}",
            evidence=evidence,
        )
    change_state(session, locked, change, now=now, enqueue_router=False)
    config_cache.invalidate(experiment.key)
    _log.error("router call failed; experiment paused", experiment=experiment.key, error=message)


def _deliver_notify(
    session: Session, item: OutboxItem, now: datetime, *, max_attempts: int, backoff_base: float
) -> bool:
    experiment = session.get(Experiment, item.experiment_id)
    decision = session.get(Decision, item.decision_id) if item.decision_id else None
    url = (experiment.notifications or {}).get("webhook_url") if experiment else None
    if experiment is None or decision is None or not url:
        item.done_at = now
        item.last_error = "nothing to deliver (no decision or no webhook_url)"
        return False
    refused = notification_problems(str(url), get_settings())
    if refused:  # the operator withdrew the host after the experiment was created
        item.done_at = now
        item.last_error = f"not delivered: {refused[0].field} {refused[0].message}"
        _log.error("notification refused by the settings", experiment=experiment.key)
        return False
    body = orjson.dumps(decision_payload(experiment, decision))
    headers = {"Content-Type": "application/json", DELIVERY_HEADER: f"outbox-{item.id}"}
    secret = experiment.notifications.get("secret")
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, str(secret))
    item.attempts += 1
    try:
        response = httpx.post(str(url), content=body, headers=headers, timeout=HTTP_TIMEOUT_SECONDS)
        error = None if response.status_code < 300 else f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    if error is None:
        item.done_at = now
        item.last_error = None
        return True
    item.last_error = error
    if item.attempts >= max_attempts:
        item.done_at = now
        item.last_error = f"gave up after {item.attempts} attempts: {error}"
        _log.error("notification dropped", experiment=experiment.key, error=error)
    else:
        item.next_attempt_at = now + backoff(item.attempts, base=backoff_base)
    return False


def _deliver_mlflow(
    session: Session, item: OutboxItem, now: datetime, *, max_attempts: int, backoff_base: float
) -> bool:
    item.attempts += 1
    try:
        with session.begin_nested():  # a failure half-way leaves no partial variant metadata
            mlflow_integration.deliver(session, item)
    except Exception as exc:  # the MLflow client raises its own and requests' exceptions
        error = f"{type(exc).__name__}: {exc}"[:2000]
        item.last_error = error
        if item.attempts >= max_attempts:
            item.done_at = now
            item.last_error = f"gave up after {item.attempts} attempts: {error}"
            _log.error("mlflow call dropped", experiment_id=item.experiment_id, error=error)
        else:
            item.next_attempt_at = now + backoff(item.attempts, base=backoff_base)
            _log.warning("mlflow call failed, will retry", error=error, attempts=item.attempts)
        return False
    item.done_at = now
    item.last_error = None
    return True
