"""Fixtures for control tests: experiments created through the registry, on the real database."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from abstats.db.models import AnalysisSnapshot, Experiment
from abstats.experiments import repository
from abstats.experiments.schemas import parse_create

T = TypeVar("T")


def until_settled(
    read: Callable[[], T], done: Callable[[T], bool], *, timeout: float, interval: float
) -> T:
    """Poll ``read`` until ``done`` holds for two reads in a row that agree (or ``timeout``
    passes), and return the last read. A router applies a change asynchronously (an nginx
    reload, a flagd file reload), so one read can mix the old and the new split."""
    deadline = time.monotonic() + timeout
    previous: T | None = None
    while True:
        value = read()
        if (value == previous and done(value)) or time.monotonic() > deadline:
            return value
        previous = value
        time.sleep(interval)


METRICS = [
    {
        "key": "conversion",
        "kind": "proportion",
        "outcome": "converted",
        "role": "primary",
        "direction": "increase",
    },
    {
        "key": "latency_p95",
        "kind": "latency",
        "statistic": "p95",
        "role": "guardrail",
        "margin": "10%",
    },
]


def experiment_body(key: str = "churn", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key,
        "name": f"{key} model test",
        "control": "v1",
        "variants": [
            {"key": "v1", "model_version": "xgb-1.0"},
            {"key": "v2", "model_version": "xgb-2.0"},
        ],
        "metrics": METRICS,
        "policy": {"ramp": {"steps": [5, 25, 50, 100], "min_interval": "30m"}},
    }
    body.update(overrides)
    return body


def make_experiment(session: Session, key: str = "churn", **overrides: Any) -> Experiment:
    from abstats.experiments.service import create_experiment

    create_experiment(session, parse_create(experiment_body(key, **overrides)))
    session.flush()
    return repository.get_experiment(session, key)


def add_snapshot(session: Session, experiment: Experiment, result: Any) -> AnalysisSnapshot:
    row = AnalysisSnapshot(
        experiment_id=experiment.id,
        cutoff=result.cutoff,
        weight_epoch=result.weight_epoch,
        recommendation=result.recommendation,
        result=result.model_dump(mode="json"),
    )
    session.add(row)
    session.flush()
    return row


@pytest.fixture
def experiment_factory(db_session: Session) -> Callable[..., Experiment]:
    def _make(key: str = "churn", **overrides: Any) -> Experiment:
        return make_experiment(db_session, key, **overrides)

    return _make


@pytest.fixture
def committed(committed_engine: Engine) -> Iterator[Engine]:
    """Real commits (other connections, background threads, subprocesses see the rows)."""
    from abstats.control.endpoints import clear_caches

    clear_caches()
    yield committed_engine
    clear_caches()
