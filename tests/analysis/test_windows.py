"""Attribution windows (issue 17): a windowed metric counts a unit's outcomes stamped within the
window after its first exposure, only for units whose window has closed by the cut-off; the SQL
equals a brute-force computation, incremental runs equal a rebuild exactly (a late, earlier
exposure moves a unit's window), and under a ramp with delayed labels the windowed comparison is
unbiased where counting every outcome is not."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session

from abstats.analysis import aggregate
from abstats.analysis.rollup import RollupPlan, clear_rollups, lock_analysis, roll_up
from abstats.db.models import Experiment
from abstats.engine.specs import MetricSpec

from .conftest import T0, Events, make_experiment, write_events
from .test_rollup import rollup_rows

HOUR = timedelta(hours=1)
METRICS = [
    {
        "key": "conversion_1d",
        "kind": "proportion",
        "outcome": "converted",
        "role": "primary",
        "direction": "increase",
        "window": "1d",
    },
    {"key": "revenue_2h", "kind": "mean", "outcome": "revenue", "window": "2h"},
    {"key": "revenue", "kind": "mean", "outcome": "revenue"},
]
EPOCH1 = T0 + 24 * HOUR


def _run(session: Session, experiment: Experiment) -> None:
    plan = RollupPlan.from_metrics([MetricSpec.model_validate(m) for m in METRICS])
    lock_analysis(session, experiment.id)
    assert not roll_up(session, experiment.id, plan, wait_seconds=1).held_back_by


def _batch(rng: np.random.Generator, prefix: str, units: int, start: datetime) -> Events:
    ev = Events()
    for i in range(units):
        unit = f"{prefix}{i}"
        first = start + timedelta(hours=float(rng.uniform(0, 40)))
        variant = "control" if rng.random() < 0.5 else "treatment"
        if rng.random() < 0.9:
            ev.exposures.append({"variant": variant, "unit_id": unit, "ts": first})
        else:  # exposed by its prediction only
            ev.predictions.append(
                {
                    "variant": variant,
                    "unit_id": unit,
                    "request_id": f"r-{unit}",
                    "ts": first,
                    "score": 0.5,
                    "latency_ms": 10.0,
                    "error": False,
                }
            )
        for _ in range(int(rng.poisson(1.2))):  # delays around the windows' edges, some before
            delay = timedelta(hours=float(rng.exponential(20)) - 1)
            ev.outcomes.append(
                {"unit_id": unit, "name": "converted", "value": 1.0, "ts": first + delay}
            )
            ev.outcomes.append(
                {
                    "unit_id": unit,
                    "name": "revenue",
                    "value": float(rng.exponential(10)),
                    "ts": first + delay / 10,
                }
            )
    return ev


def _reference(
    experiment: Experiment, events: Events, name: str, seconds: int, cutoff: datetime
) -> tuple[dict[tuple[int, int], tuple[int, int, float, float]], dict[int, int]]:
    """(variant id, epoch) -> (units, positive units, sum, sum of squares) over units whose window
    (hour-binned) has closed; pending units per variant id."""
    vid = {v.key: v.id for v in experiment.variants}
    first: dict[str, tuple[bool, datetime, int]] = {}
    for source, exposed in ((events.exposures, True), (events.predictions, False)):
        for e in source:
            key = (exposed, e["ts"], vid[e["variant"]])
            old = first.get(e["unit_id"])
            if old is None or (key[0] and not old[0]) or (key[0] == old[0] and key[1:] < old[1:]):
                first[e["unit_id"]] = key
    values: dict[str, float] = {}
    positive: dict[str, bool] = {}
    for o in events.outcomes:
        unit = first.get(o["unit_id"])
        if o["name"] != name or unit is None:
            continue
        if unit[1] <= o["ts"] < unit[1] + timedelta(seconds=seconds):
            values[o["unit_id"]] = values.get(o["unit_id"], 0.0) + o["value"]
            positive[o["unit_id"]] = positive.get(o["unit_id"], False) or o["value"] > 0
    cells: dict[tuple[int, int], list[float]] = {}
    pending: dict[int, int] = {}
    for unit, (_, ts, variant) in first.items():
        hour_end = (math.floor(ts.timestamp() / 3600) + 1) * 3600
        if hour_end + seconds > cutoff.timestamp():
            pending[variant] = pending.get(variant, 0) + 1
            continue
        c = cells.setdefault((variant, 0 if ts < EPOCH1 else 1), [0, 0, 0.0, 0.0])
        x = values.get(unit, 0.0)
        c[0] += 1
        c[1] += positive.get(unit, False)
        c[2] += x
        c[3] += x * x
    return {k: (int(v[0]), int(v[1]), v[2], v[3]) for k, v in cells.items()}, pending


def _check(
    session: Session, experiment: Experiment, events: Events, cutoff: datetime
) -> dict[str, Any]:
    got: dict[str, Any] = {}
    for name, seconds in (("converted", 86400), ("revenue", 7200)):
        cells, pending = aggregate.window_cells(session, experiment.id, name, seconds, cutoff)
        ref_cells, ref_pending = _reference(experiment, events, name, seconds, cutoff)
        assert pending == ref_pending
        assert set(cells) == set(ref_cells)
        for cell, (units, positives, total, squares) in ref_cells.items():
            assert cells[cell].proportion.n == units
            assert cells[cell].proportion.successes == positives
            assert math.isclose(cells[cell].mean.sum, total, rel_tol=1e-9, abs_tol=1e-9)
            assert math.isclose(cells[cell].mean.sum_squares, squares, rel_tol=1e-9, abs_tol=1e-9)
        got[name] = (cells, pending)
    return got


def test_windowed_sums_equal_brute_force_and_incremental_equals_rebuild(
    db_session: Session, rng: np.random.Generator
) -> None:
    experiment = make_experiment(
        db_session,
        metrics=METRICS,
        epochs=[(T0, {"control": 1, "treatment": 1}), (EPOCH1, {"control": 1, "treatment": 1})],
    )
    first = _batch(rng, "a", 300, T0)
    write_events(db_session, experiment, first)
    _run(db_session, experiment)
    cutoff = T0 + 50 * HOUR
    _check(db_session, experiment, first, cutoff)
    # second batch: new units; outcomes of old units; units whose exposure arrives only now
    # (their outcomes came first); old units exposed 3 hours *earlier* (their window moves)
    second = _batch(rng, "b", 150, T0 + 10 * HOUR)
    for x in first.exposures[:20]:
        second.exposures.append(
            {"variant": x["variant"], "unit_id": x["unit_id"], "ts": x["ts"] - 3 * HOUR}
        )
    for i in range(10):
        second.outcomes.append(
            {"unit_id": f"late{i}", "name": "converted", "value": 1.0, "ts": T0 + 5 * HOUR}
        )
        second.outcomes.append(
            {
                "unit_id": first.exposures[i]["unit_id"],
                "name": "converted",
                "value": 1.0,
                "ts": first.exposures[i]["ts"] + 22 * HOUR,
            }
        )
    write_events(db_session, experiment, second)
    _run(db_session, experiment)
    third = Events(
        exposures=[
            {"variant": "treatment", "unit_id": f"late{i}", "ts": T0 + 4 * HOUR} for i in range(10)
        ]
    )
    write_events(db_session, experiment, third)
    _run(db_session, experiment)
    union = Events(
        first.exposures + second.exposures + third.exposures,
        first.predictions + second.predictions,
        first.outcomes + second.outcomes,
    )
    for cutoff in (T0 + 30 * HOUR, T0 + 60 * HOUR, T0 + 200 * HOUR):
        _check(db_session, experiment, union, cutoff)
    incremental_rows = rollup_rows(db_session, experiment)
    assert len(incremental_rows["analysis_unit_window"]) > 100
    incremental = _check(db_session, experiment, union, T0 + 60 * HOUR)
    assert sum(incremental["converted"][1].values()) > 0  # some units are pending
    clear_rollups(db_session, experiment.id)
    _run(db_session, experiment)
    assert rollup_rows(db_session, experiment) == incremental_rows
    assert _check(db_session, experiment, union, T0 + 60 * HOUR) == incremental


def test_the_snapshot_and_report_say_how_many_units_wait(
    db_session: Session, rng: np.random.Generator
) -> None:
    from abstats.analysis.service import run_analysis
    from abstats.engine.snapshot import SnapshotResult
    from abstats.engine.words import window_pending

    experiment = make_experiment(db_session, metrics=METRICS)
    events = _batch(rng, "a", 200, T0)
    write_events(db_session, experiment, events)
    run = run_analysis(db_session, experiment.key, wait_seconds=1, now=T0 + 45 * HOUR)
    snap = SnapshotResult.model_validate(run.snapshot.result)
    cutoff = snap.cutoff  # the server clock: outcomes are stamped up to days later
    conversion = next(m for m in snap.metrics if m.metric == "conversion_1d")
    cells, pending = aggregate.window_cells(db_session, experiment.id, "converted", 86400, cutoff)
    key_of = {v.id: v.key for v in experiment.variants}
    assert conversion.window == "1d"
    assert conversion.pending_units == {key_of[v]: n for v, n in pending.items()}
    assert sum(conversion.pending_units.values()) > 0
    for variant, value in conversion.variants.items():
        counted = sum(c.proportion.n for (v, _), c in cells.items() if key_of[v] == variant)
        assert value.units == counted == snap.units[variant] - conversion.pending_units[variant]
    plain = next(m for m in snap.metrics if m.metric == "revenue")
    assert plain.window is None and plain.pending_units == {}
    assert window_pending("conversion_1d", "1d", conversion.pending_units).startswith(
        f"conversion_1d (window 1d): {sum(pending.values()):,} units wait"
    )


def test_a_window_is_validated() -> None:
    import pydantic

    base = {"key": "c", "kind": "proportion", "outcome": "c"}
    assert MetricSpec.model_validate({**base, "window": "7d"}).window_seconds == 7 * 86400
    for bad, needle in (
        ({**base, "window": "10m"}, "between 1h and 366d"),
        ({**base, "window": "soon"}, "not a duration"),
        (
            {"key": "l", "kind": "latency", "statistic": "p50", "window": "1d"},
            "proportion and mean",
        ),
        ({**base, "kind": "mean", "winsorize": 0.99, "window": "1d"}, "cannot be combined"),
    ):
        with pytest.raises(pydantic.ValidationError, match=needle):
            MetricSpec.model_validate(bad)
