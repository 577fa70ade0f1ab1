"""Fixtures of the analysis tests: experiments with generated events written straight to the
event tables (the ingest API is not under test here)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session

from abstats.db.models import Experiment, Exposure, Outcome, Prediction, Variant, WeightEpoch

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class Events:
    """What a test wrote, kept for the brute-force computation."""

    exposures: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)


def make_experiment(
    session: Session,
    *,
    metrics: list[dict[str, Any]],
    policy: dict[str, Any] | None = None,
    variants: tuple[str, ...] = ("control", "treatment"),
    epochs: list[tuple[datetime, dict[str, float]]] | None = None,
    key: str | None = None,
    status: str = "running",
) -> Experiment:
    experiment = Experiment(
        key=key or f"exp-{uuid.uuid4().hex[:8]}",
        name="test",
        status=status,
        control_variant=variants[0],
        salt="s",
        metrics=metrics,
        policy=policy or {},
        router={"backend": "builtin"},
        started_at=T0,
    )
    experiment.variants = [Variant(key=v, position=i) for i, v in enumerate(variants)]
    session.add(experiment)
    session.flush()
    history = epochs or [(T0, {v: 1.0 for v in variants})]
    for number, (start, weights) in enumerate(history):
        end = history[number + 1][0] if number + 1 < len(history) else None
        session.add(
            WeightEpoch(
                experiment_id=experiment.id,
                epoch=number,
                weights=weights,
                started_at=start,
                ended_at=end,
            )
        )
    session.flush()
    return experiment


def write_events(session: Session, experiment: Experiment, events: Events) -> None:
    ids = {v.key: v.id for v in experiment.variants}

    def rows(items: list[dict[str, Any]], with_variant: bool) -> list[dict[str, Any]]:
        out = []
        for item in items:
            row = {k: v for k, v in item.items() if k != "variant"}
            row["experiment_id"] = experiment.id
            row.setdefault("message_id", uuid.uuid4().hex)
            if with_variant:
                row["variant_id"] = ids[item["variant"]]
            out.append(row)
        return out

    if events.exposures:
        session.execute(insert(Exposure), rows(events.exposures, True))
    if events.predictions:
        session.execute(insert(Prediction), rows(events.predictions, True))
    if events.outcomes:
        session.execute(insert(Outcome), rows(events.outcomes, False))
    session.flush()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261122)


@pytest.fixture
def experiment_factory(db_session: Session) -> Callable[..., Experiment]:
    def factory(**kwargs: Any) -> Experiment:
        return make_experiment(db_session, **kwargs)

    return factory


def minutes(m: float) -> timedelta:
    return timedelta(minutes=m)
