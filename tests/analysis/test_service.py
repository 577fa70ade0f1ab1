"""End to end on a real database: events -> rollups -> statistics -> an immutable snapshot."""

from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from abstats.analysis.service import run_analysis
from abstats.db.models import AnalysisSnapshot
from abstats.engine.snapshot import SnapshotResult
from abstats.errors import Conflict, InvalidInput

from .conftest import T0, Events, make_experiment, minutes, write_events

POLICY = {
    "min_units_per_variant": 100,
    "min_events_per_variant": 10,
    "min_runtime": "1h",
    "mde": "50%",
}
METRICS = [
    {
        "key": "conversion",
        "kind": "proportion",
        "outcome": "converted",
        "role": "primary",
        "direction": "increase",
    },
    {"key": "errors", "kind": "error_rate", "role": "guardrail", "margin": 0.01},
    {"key": "latency", "kind": "latency", "statistic": "mean", "role": "secondary"},
]


def traffic(
    rng: np.random.Generator, units: int, rates: dict[str, float], prefix: str, start_min: float = 0
) -> Events:
    ev = Events()
    for i in range(units):
        variant = "control" if i % 2 == 0 else "treatment"
        unit = f"{prefix}{i}"
        ts = T0 + minutes(start_min + 180 * i / units)
        ev.exposures.append({"variant": variant, "unit_id": unit, "ts": ts})
        ev.predictions.append(
            {
                "variant": variant,
                "unit_id": unit,
                "request_id": f"r{unit}",
                "ts": ts,
                "score": 0.5,
                "latency_ms": 10.0 + (i % 7),
                "error": False,
            }
        )
        if rng.random() < rates[variant]:
            ev.outcomes.append(
                {"unit_id": unit, "name": "converted", "value": 1.0, "ts": ts + minutes(5)}
            )
    return ev


def test_a_snapshot_per_new_data_and_none_without(db_session: Session) -> None:
    rng = np.random.default_rng(5)
    experiment = make_experiment(db_session, metrics=METRICS, policy=POLICY)
    events = traffic(rng, 4000, {"control": 0.10, "treatment": 0.20}, "a")
    write_events(db_session, experiment, events)
    first = run_analysis(db_session, experiment.key, wait_seconds=1)
    assert first.created
    result = SnapshotResult.model_validate(first.snapshot.result)
    assert result.units == {"control": 2000, "treatment": 2000}
    assert result.gates.all_met
    assert result.srm is not None and not result.srm.flagged
    conversion = result.metrics[0]
    assert conversion.variants["treatment"].value == pytest.approx(
        conversion.variants["treatment"].events / 2000
    )
    comparison = conversion.comparisons[0]
    assert comparison.better is True and comparison.significant
    errors = result.metrics[1].comparisons[0]
    assert errors.non_inferior is True  # 0 errors in both arms proves a 0.01 margin
    # an absolute margin puts the effect on the absolute scale, finite although the control is 0
    assert errors.ci_scale == "absolute" and errors.absolute_effect == 0
    assert errors.ci_lower is not None and -0.01 < errors.ci_lower < 0 < errors.ci_upper < 0.01
    assert conversion.comparisons[0].ci_scale == "relative"  # no margin: relative
    # the recommendation is the rule table's own verdict (abstats.engine.rules.recommend)
    assert result.recommendation == "promote treatment"
    # the reason reads like a sentence: a signed percentage, its interval and p (no Python dicts)
    assert re.fullmatch(
        r"promote treatment: treatment conversion \+\d+\.\d% \[\+\d+\.\d%, \+\d+\.\d%\], "
        r"always-valid p < 0\.0001 < 0\.05; errors non-inferior \(margin 0\.01\)",
        result.reason,
    ), result.reason
    latest = max(e["ts"] for e in events.exposures + events.predictions + events.outcomes)
    assert result.cutoff == latest  # the data cut-off is the latest event included

    again = run_analysis(db_session, experiment.key, wait_seconds=1)
    assert not again.created and again.snapshot.id == first.snapshot.id

    write_events(
        db_session,
        experiment,
        traffic(rng, 400, {"control": 0.10, "treatment": 0.20}, "b", start_min=10),
    )
    later = run_analysis(db_session, experiment.key, wait_seconds=1)
    assert later.created and later.snapshot.cutoff > first.snapshot.cutoff
    later_result = SnapshotResult.model_validate(later.snapshot.result)
    assert later_result.units == {"control": 2200, "treatment": 2200}
    # always-valid p-values are carried and never increase
    assert later_result.metrics[0].comparisons[0].p_value <= comparison.p_value
    count = db_session.scalar(
        select(func.count())
        .select_from(AnalysisSnapshot)
        .where(AnalysisSnapshot.experiment_id == experiment.id)
    )
    assert count == 2


def test_gates_hold_a_decision_and_say_why(db_session: Session) -> None:
    rng = np.random.default_rng(6)
    experiment = make_experiment(
        db_session, metrics=METRICS, policy={**POLICY, "min_units_per_variant": 5000}
    )
    write_events(db_session, experiment, traffic(rng, 600, {"control": 0.1, "treatment": 0.3}, "a"))
    result = SnapshotResult.model_validate(
        run_analysis(db_session, experiment.key, wait_seconds=1).snapshot.result
    )
    assert not result.gates.min_units_met and result.gates.min_runtime_met
    assert result.recommendation == "keep_running"
    assert result.reason == (
        "below the minimum-sample gates: units per variant control 300, treatment 300 < 5,000"
    )


def test_srm_is_flagged_against_the_weight_history(db_session: Session) -> None:
    experiment = make_experiment(
        db_session,
        metrics=METRICS,
        policy={**POLICY, "min_events_per_variant": 0},
        epochs=[
            (T0, {"control": 1, "treatment": 1}),
            (T0 + timedelta(hours=1), {"control": 1, "treatment": 3}),
        ],
    )
    ev = Events()
    # 50/50 in both epochs although epoch 1 should be 25/75: a mismatch
    for i in range(6000):
        ts = T0 + minutes(120 * i / 6000)
        ev.exposures.append(
            {"variant": ("control", "treatment")[i % 2], "unit_id": f"u{i}", "ts": ts}
        )
    write_events(db_session, experiment, ev)
    result = SnapshotResult.model_validate(
        run_analysis(db_session, experiment.key, wait_seconds=1).snapshot.result
    )
    assert result.exposures_by_epoch == {
        "0": {"control": 1500, "treatment": 1500},
        "1": {"control": 1500, "treatment": 1500},
    }
    assert result.srm is not None and result.srm.flagged
    # units first seen in the first seconds of epoch 1 (the settle window) are left out of SRM
    assert 0 < result.srm_excluded_units < 10
    assert result.srm.expected["treatment"] == pytest.approx(
        1500 + 0.75 * (3000 - result.srm_excluded_units)
    )
    assert result.recommendation == "pause"  # the policy's on_srm
    assert result.reason.startswith("invalid: SRM (p < 0.0001 < ")


def test_a_draft_or_a_broken_metric_is_refused_with_what_to_fix(db_session: Session) -> None:
    draft = make_experiment(db_session, metrics=METRICS, status="draft")
    with pytest.raises(Conflict, match="start it"):
        run_analysis(db_session, draft.key)
    broken = make_experiment(db_session, metrics=[{"key": "m", "kind": "ratio", "numerator": "x"}])
    with pytest.raises(InvalidInput, match=r"metrics\[0\].*denominator"):
        run_analysis(db_session, broken.key)


def test_holm_across_treatments_and_primaries(db_session: Session) -> None:
    from abstats.stats import holm

    rng = np.random.default_rng(8)
    metrics = [
        {
            "key": "conversion",
            "kind": "proportion",
            "outcome": "converted",
            "role": "primary",
            "direction": "increase",
        },
        {
            "key": "revenue",
            "kind": "mean",
            "outcome": "converted",
            "role": "primary",
            "direction": "increase",
        },
    ]
    experiment = make_experiment(
        db_session, metrics=metrics, policy=POLICY, variants=("control", "t1", "t2")
    )
    ev = Events()
    rates = {"control": 0.10, "t1": 0.13, "t2": 0.10}
    for i in range(3000):
        variant = ("control", "t1", "t2")[i % 3]
        ts = T0 + minutes(120 * i / 3000)
        ev.exposures.append({"variant": variant, "unit_id": f"u{i}", "ts": ts})
        if rng.random() < rates[variant]:
            ev.outcomes.append({"unit_id": f"u{i}", "name": "converted", "value": 1.0, "ts": ts})
    write_events(db_session, experiment, ev)
    result = SnapshotResult.model_validate(
        run_analysis(db_session, experiment.key, wait_seconds=1).snapshot.result
    )
    family = [c for m in result.metrics for c in m.comparisons]
    assert len(family) == 4
    raw = [c.p_value for c in family]
    assert all(p is not None for p in raw)
    expected = holm([p for p in raw if p is not None])
    assert [c.p_value_adjusted for c in family] == pytest.approx(expected)
    # significance rests on the adjusted p-values
    assert all(c.p_value_adjusted <= 0.05 for c in family if c.significant)
    assert all(a >= p for a, p in zip(expected, raw, strict=True) if p is not None)


def test_a_guardrail_worse_within_its_margin_is_no_breach(db_session: Session) -> None:
    metrics = [
        {
            "key": "latency",
            "kind": "latency",
            "statistic": "mean",
            "role": "guardrail",
            "margin": "10%",
        }
    ]
    experiment = make_experiment(db_session, metrics=metrics, policy=POLICY)
    ev = Events()
    for i in range(4000):
        variant = ("control", "treatment")[i % 2]
        latency = (20.0 if variant == "control" else 20.4) + (i % 5)  # 2% slower, no noise
        ev.predictions.append(
            {
                "variant": variant,
                "unit_id": f"u{i}",
                "ts": T0 + minutes(i / 20),
                "latency_ms": latency,
                "error": False,
            }
        )
    write_events(db_session, experiment, ev)
    result = SnapshotResult.model_validate(
        run_analysis(db_session, experiment.key, wait_seconds=1).snapshot.result
    )
    comparison = result.metrics[0].comparisons[0]
    assert comparison.worse is True  # significantly slower ...
    assert comparison.non_inferior is True  # ... but proven within the 10% margin
    assert result.recommendation != "rollback"


def test_an_error_rate_breach_is_read_on_its_absolute_margin(db_session: Session) -> None:
    """A control with (almost) no errors makes a relative effect meaningless (+inf%, or an
    interval of thousands of percent); a metric whose margin is absolute is analysed and
    explained on the absolute scale."""
    metrics = [
        {"key": "errors", "kind": "error_rate", "role": "guardrail", "margin": 0.01},
        {"key": "latency", "kind": "latency", "statistic": "mean", "role": "primary"},
    ]
    experiment = make_experiment(db_session, metrics=metrics, policy=POLICY)
    ev = Events()
    for i in range(6000):
        variant = ("control", "treatment")[i % 2]
        error = variant == "treatment" and i % 10 == 1  # 0% vs 20% errors
        ev.predictions.append(
            {
                "variant": variant,
                "unit_id": f"u{i}",
                "ts": T0 + minutes(i / 20),
                "latency_ms": 10.0 + i % 7,
                "error": error,
            }
        )
    write_events(db_session, experiment, ev)
    result = SnapshotResult.model_validate(
        run_analysis(db_session, experiment.key, wait_seconds=1).snapshot.result
    )
    errors = result.metrics[0].comparisons[0]
    assert errors.ci_scale == "absolute"
    assert errors.absolute_effect == pytest.approx(0.2)
    assert errors.ci_lower is not None and errors.ci_upper is not None
    assert 0.01 < errors.ci_lower < 0.2 < errors.ci_upper < 0.3
    assert errors.worse is True and errors.non_inferior is False
    assert result.recommendation == "rollback", result.reason
    assert re.fullmatch(
        r"guardrail breach: errors worse in treatment: "
        r"\+0\.2 \[\+0\.1\d+, \+0\.2\d+\] \(margin 0\.01\)",
        result.reason,
    ), result.reason


def test_a_future_stamped_event_cannot_satisfy_a_time_gate(db_session: Session) -> None:
    """A client's clock 23 h ahead (accepted: the limit is 24 h) used to move the data cut-off,
    so ``min_runtime: 2h`` was met minutes after the start. The server's clock bounds it now."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    start = now - timedelta(minutes=10)
    experiment = make_experiment(
        db_session,
        metrics=METRICS,
        policy={**POLICY, "min_runtime": "2h"},
        epochs=[(start, {"control": 1.0, "treatment": 1.0})],
    )
    rng = np.random.default_rng(9)
    events = traffic(rng, 1000, {"control": 0.1, "treatment": 0.3}, "f")
    for group in (events.exposures, events.predictions, events.outcomes):
        for e in group:  # the 180 minutes of `traffic` squeezed into the last 9 minutes
            e["ts"] = start + (e["ts"] - T0) / 20
    events.outcomes.append(
        {"unit_id": "f1", "name": "converted", "value": 1.0, "ts": now + timedelta(hours=23)}
    )
    write_events(db_session, experiment, events)
    run = run_analysis(db_session, experiment.key, wait_seconds=1, now=now)
    result = SnapshotResult.model_validate(run.snapshot.result)
    assert result.cutoff <= now  # stored, analysed, but not the clock
    assert result.runtime_seconds <= 600
    assert not result.gates.min_runtime_met
    assert result.recommendation == "keep_running" and "runtime" in result.reason
