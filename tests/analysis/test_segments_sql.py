"""Segments from the rollups (issue 17): each unit's segment is a feature of its first prediction
(a late, earlier prediction changes it), the per-segment cells equal brute force, incremental runs
equal a rebuild, and the snapshot carries the breakdown (which no rule reads)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from sqlalchemy.orm import Session

from abstats.analysis import aggregate
from abstats.analysis.rollup import RollupPlan, clear_rollups, lock_analysis, roll_up
from abstats.db.models import Experiment
from abstats.engine.specs import MetricSpec

from .conftest import T0, Events, make_experiment, write_events
from .test_rollup import rollup_rows

METRICS = [
    {
        "key": "conversion",
        "kind": "proportion",
        "outcome": "converted",
        "role": "primary",
        "direction": "increase",
        "segment_by": "country",
    },
    {"key": "spend", "kind": "mean", "outcome": "spend", "segment_by": "country"},
]
COUNTRIES = ("de", "fr", "us")


def _run(session: Session, experiment: Experiment) -> None:
    plan = RollupPlan.from_metrics([MetricSpec.model_validate(m) for m in METRICS])
    lock_analysis(session, experiment.id)
    assert not roll_up(session, experiment.id, plan, wait_seconds=1).held_back_by


def _batch(rng: np.random.Generator, prefix: str, units: int) -> Events:
    ev = Events()
    for i in range(units):
        unit = f"{prefix}{i}"
        first = T0 + timedelta(minutes=float(rng.uniform(0, 600)))
        variant = "control" if rng.random() < 0.5 else "treatment"
        ev.exposures.append({"variant": variant, "unit_id": unit, "ts": first})
        for k in range(int(rng.poisson(1.5))):
            features = {"country": str(rng.choice(COUNTRIES))} if rng.random() < 0.9 else {}
            ev.predictions.append(
                {
                    "variant": variant,
                    "unit_id": unit,
                    "request_id": f"{unit}-{k}",
                    "ts": first + timedelta(minutes=k),
                    "score": 0.5,
                    "latency_ms": 5.0,
                    "error": False,
                    "features": features,
                }
            )
        if rng.random() < 0.3:
            ev.outcomes.append({"unit_id": unit, "name": "converted", "value": 1.0, "ts": first})
            ev.outcomes.append(
                {"unit_id": unit, "name": "spend", "value": float(rng.exponential(20)), "ts": first}
            )
    return ev


def _reference(experiment: Experiment, events: Events) -> dict[tuple[str, int], tuple[int, int]]:
    """(segment, variant id) -> (units, converted units)."""
    vid = {v.key: v.id for v in experiment.variants}
    variant = {x["unit_id"]: vid[x["variant"]] for x in events.exposures}
    first: dict[str, tuple[object, int, str]] = {}
    for n, p in enumerate(events.predictions):
        key = (p["ts"], n, p["features"].get("country", ""))
        if p["unit_id"] not in first or key[:2] < first[p["unit_id"]][:2]:  # type: ignore[operator]
            first[p["unit_id"]] = key
    converted = {o["unit_id"] for o in events.outcomes if o["name"] == "converted"}
    out: dict[tuple[str, int], list[int]] = {}
    for unit, v in variant.items():
        segment = first[unit][2] if unit in first else ""
        cell = out.setdefault((segment, v), [0, 0])
        cell[0] += 1
        cell[1] += unit in converted
    return {k: (a, b) for k, (a, b) in out.items()}


def _got(session: Session, experiment: Experiment) -> dict[tuple[str, int], tuple[int, int]]:
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for segment, cells in aggregate.segment_cells(
        session, experiment.id, "country", "converted"
    ).items():
        for (v, _), oc in cells.items():
            units, successes = out.get((segment, v), (0, 0))
            out[(segment, v)] = (units + oc.proportion.n, successes + oc.proportion.successes)
    return out


def test_segment_cells_equal_brute_force_and_incremental_equals_rebuild(
    db_session: Session, rng: np.random.Generator
) -> None:
    experiment = make_experiment(db_session, metrics=METRICS)
    first = _batch(rng, "a", 300)
    write_events(db_session, experiment, first)
    _run(db_session, experiment)
    assert _got(db_session, experiment) == _reference(experiment, first)
    # late, earlier predictions of old units with another country: their segment changes
    second = _batch(rng, "b", 100)
    for x in first.exposures[:40]:
        second.predictions.append(
            {
                "variant": x["variant"],
                "unit_id": x["unit_id"],
                "request_id": f"late-{x['unit_id']}",
                "ts": x["ts"] - timedelta(seconds=30),
                "score": 0.5,
                "latency_ms": 5.0,
                "error": False,
                "features": {"country": "ch"},
            }
        )
    write_events(db_session, experiment, second)
    _run(db_session, experiment)
    union = Events(
        first.exposures + second.exposures,
        first.predictions + second.predictions,
        first.outcomes + second.outcomes,
    )
    reference = _reference(experiment, union)
    assert _got(db_session, experiment) == reference
    assert sum(n for (segment, _), (n, _) in reference.items() if segment == "ch") >= 40
    rows = rollup_rows(db_session, experiment)
    clear_rollups(db_session, experiment.id)
    _run(db_session, experiment)
    assert rollup_rows(db_session, experiment) == rows


def test_the_snapshot_carries_the_breakdown(db_session: Session, rng: np.random.Generator) -> None:
    from abstats.analysis.service import run_analysis
    from abstats.engine.snapshot import SnapshotResult

    experiment = make_experiment(db_session, metrics=METRICS, policy={"ramp": None})
    write_events(db_session, experiment, _batch(rng, "a", 400))
    run = run_analysis(db_session, experiment.key, wait_seconds=1, now=T0 + timedelta(days=1))
    snap = SnapshotResult.model_validate(run.snapshot.result)
    conversion = next(m for m in snap.metrics if m.metric == "conversion")
    (b,) = conversion.segments
    assert b.feature == "country" and b.variant == "treatment"
    assert {s.segment for s in b.segments} == {"de", "fr", "us", ""}
    assert sum(s.control_units + s.treatment_units for s in b.segments) == 400
    assert b.heterogeneity_df == len([s for s in b.segments if s.status == "ok"]) - 1
    assert all(s.p_value_bh is not None for s in b.segments if s.status == "ok")


def test_segment_by_is_validated() -> None:
    import pydantic
    import pytest

    base = {"key": "c", "kind": "proportion", "outcome": "c"}
    assert MetricSpec.model_validate({**base, "segment_by": "country"}).segment_by == "country"
    for bad, needle in (
        ({**base, "segment_by": "bad name!"}, "pattern"),
        ({**base, "segment_by": "country", "window": "1d"}, "cannot be combined"),
        ({"key": "l", "kind": "error_rate", "segment_by": "country"}, "proportion and mean"),
    ):
        with pytest.raises(pydantic.ValidationError, match=needle):
            MetricSpec.model_validate(bad)
