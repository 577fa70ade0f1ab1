"""All SQL of the registry: experiments, variants, weight epochs, decisions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, selectinload

from abstats.db.models import (
    Decision,
    Experiment,
    Exposure,
    Prediction,
    Variant,
    WeightEpoch,
)
from abstats.errors import NotFound


def get_experiment(session: Session, key: str, *, for_update: bool = False) -> Experiment:
    stmt = (
        select(Experiment).where(Experiment.key == key).options(selectinload(Experiment.variants))
    )
    if for_update:
        stmt = stmt.with_for_update(of=Experiment)
    experiment = session.scalars(stmt).first()
    if experiment is None:
        raise NotFound(f"No experiment with key {key!r}.")
    return experiment


def list_experiments(
    session: Session, *, limit: int, starting_after: str | None = None, status: str | None = None
) -> list[Experiment]:
    stmt = select(Experiment).options(selectinload(Experiment.variants)).order_by(Experiment.key)
    if starting_after is not None:
        stmt = stmt.where(Experiment.key > starting_after)
    if status is not None:
        stmt = stmt.where(Experiment.status == status)
    return list(session.scalars(stmt.limit(limit)))


def running_experiment_keys(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(Experiment.key).where(Experiment.status == "running").order_by(Experiment.key)
        )
    )


def current_epoch(session: Session, experiment_id: int) -> WeightEpoch | None:
    return session.scalars(
        select(WeightEpoch)
        .where(WeightEpoch.experiment_id == experiment_id)
        .order_by(WeightEpoch.epoch.desc())
        .limit(1)
    ).first()


def weight_history(session: Session, experiment_id: int) -> list[WeightEpoch]:
    return list(
        session.scalars(
            select(WeightEpoch)
            .where(WeightEpoch.experiment_id == experiment_id)
            .order_by(WeightEpoch.epoch)
        )
    )


def epoch_confirmations(session: Session, experiment_id: int) -> dict[int, datetime | None]:
    """When each weight epoch's weights were confirmed by the router (epoch -> time).

    An epoch opened by a decision whose router call was delivered (applied and read back) is
    confirmed at that delivery; one whose call is still pending, failed or was superseded is not
    confirmed (``None``); an epoch with no router call (the first epoch, weights changed while
    not running) is confirmed when it started."""
    rows = session.execute(
        text(
            """
            SELECT w.epoch, w.started_at,
                   bool_or(o.id IS NOT NULL) AS has_call,
                   min(o.done_at) FILTER (WHERE o.done_at IS NOT NULL AND o.last_error IS NULL)
            FROM weight_epoch w
            LEFT JOIN outbox o
              ON o.decision_id = w.decision_id AND o.kind = 'router'
            WHERE w.experiment_id = :e
            GROUP BY w.epoch, w.started_at
            """
        ),
        {"e": experiment_id},
    )
    out: dict[int, datetime | None] = {}
    for epoch, started_at, has_call, delivered in rows:
        out[int(epoch)] = (
            (max(delivered, started_at) if delivered else None) if has_call else started_at
        )
    return out


def open_epoch(
    session: Session,
    experiment_id: int,
    weights: dict[str, float],
    *,
    at: datetime,
    decision_id: int | None,
) -> WeightEpoch:
    """Close the current epoch at ``at`` and open the next with ``weights``."""
    previous = current_epoch(session, experiment_id)
    number = 0
    if previous is not None:
        session.execute(
            update(WeightEpoch).where(WeightEpoch.id == previous.id).values(ended_at=at)
        )
        number = previous.epoch + 1
    epoch = WeightEpoch(
        experiment_id=experiment_id,
        epoch=number,
        weights=weights,
        started_at=at,
        decision_id=decision_id,
    )
    session.add(epoch)
    session.flush()
    return epoch


def add_decision(session: Session, **values: Any) -> Decision:
    decision = Decision(**values)
    session.add(decision)
    session.flush()
    return decision


def list_decisions(
    session: Session, experiment_id: int, *, limit: int = 100, before_id: int | None = None
) -> Sequence[Decision]:
    stmt = select(Decision).where(Decision.experiment_id == experiment_id)
    if before_id is not None:
        stmt = stmt.where(Decision.id < before_id)
    return session.scalars(stmt.order_by(Decision.id.desc()).limit(limit)).all()


def variant_ids(session: Session, experiment_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Variant.key, Variant.id).where(Variant.experiment_id == experiment_id)
    )
    return {key: vid for key, vid in rows}


def current_epochs(session: Session, experiment_ids: Sequence[int]) -> dict[int, WeightEpoch]:
    """The latest weight epoch of each experiment, in one query (for listings)."""
    if not experiment_ids:
        return {}
    rows = session.scalars(
        select(WeightEpoch)
        .where(WeightEpoch.experiment_id.in_(list(experiment_ids)))
        .order_by(WeightEpoch.experiment_id, WeightEpoch.epoch.desc())
        .distinct(WeightEpoch.experiment_id)
    )
    return {row.experiment_id: row for row in rows}


def experiment_key_exists(session: Session, key: str) -> bool:
    return session.scalar(select(Experiment.id).where(Experiment.key == key)) is not None


def variants_with_events(session: Session, variant_ids_: Sequence[int]) -> set[int]:
    """Which of these variants are referenced by any exposure or prediction."""
    if not variant_ids_:
        return set()
    ids = list(variant_ids_)
    found: set[int] = set()
    for table in (Exposure, Prediction):
        found.update(
            session.scalars(select(table.variant_id).where(table.variant_id.in_(ids)).distinct())
        )
    return found


def update_epoch_weights(session: Session, epoch_id: int, weights: dict[str, float]) -> None:
    """Rewrite a draft's epoch weights in place (a draft has served no traffic under them)."""
    session.execute(update(WeightEpoch).where(WeightEpoch.id == epoch_id).values(weights=weights))


def experiment_refs(session: Session, keys: Sequence[str]) -> dict[str, tuple[int, dict[str, int]]]:
    """``{key: (experiment_id, {variant_key: variant_id})}`` for the keys that exist."""
    if not keys:
        return {}
    rows = session.execute(
        select(Experiment.key, Experiment.id, Variant.key, Variant.id)
        .join(Variant, Variant.experiment_id == Experiment.id)
        .where(Experiment.key.in_(list(keys)))
    )
    refs: dict[str, tuple[int, dict[str, int]]] = {}
    for exp_key, exp_id, var_key, var_id in rows:
        refs.setdefault(exp_key, (exp_id, {}))[1][var_key] = var_id
    return refs
