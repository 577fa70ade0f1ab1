"""A fixed design reads its primary once, at the planned sample, and that result is final; its
guardrails are watched with a valid sequential test from the first look (issue 13, items 3-4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from abstats.engine.rules import ExperimentState, decide
from abstats.engine.snapshot import SnapshotResult
from abstats.engine.specs import ExperimentSpec
from abstats.engine.summarize import Aggregates, EpochWeights, MetricData, summarize
from abstats.stats import ProportionStats, RatioStats

T0 = datetime(2026, 11, 1, tzinfo=UTC)
HORIZON = 4000
SPEC = ExperimentSpec.parse(
    key="e",
    control="v1",
    variants=["v1", "v2"],
    metrics=[
        {
            "key": "conv",
            "kind": "proportion",
            "outcome": "c",
            "role": "primary",
            "direction": "increase",
        },
        {"key": "errors", "kind": "error_rate", "role": "guardrail", "margin": 0.01},
    ],
    policy={
        "inference": "fixed",
        "max_units_per_variant": HORIZON,
        "ramp": None,
        "min_units_per_variant": 200,
        "min_events_per_variant": 0,
        "min_runtime": 0,
    },
)
STATE = ExperimentState(
    status="running",
    control="v1",
    variants=("v1", "v2"),
    weights={"v1": 1.0, "v2": 1.0},
    weight_epoch=0,
    epoch_started_at=T0,
)


def _look(
    n: int,
    conv: dict[str, int],
    errors: dict[str, int],
    previous: SnapshotResult | None,
    minute: int,
) -> SnapshotResult:
    calls = {v: np.ones(n) for v in ("v1", "v2")}
    arms_err = {
        v: {
            0: RatioStats.from_values(
                np.r_[np.ones(errors[v]), np.zeros(n - errors[v])], calls[v], is_proportion=True
            )
        }
        for v in ("v1", "v2")
    }
    data = Aggregates(
        cutoff=T0 + timedelta(minutes=minute),
        epochs=[EpochWeights(0, T0, {"v1": 1.0, "v2": 1.0})],
        units={"v1": n, "v2": n},
        units_by_epoch={"0": {"v1": n, "v2": n}},
        mixed_units=0,
        first_seen=T0,
        metrics={
            "conv": MetricData(
                {v: {0: ProportionStats(n=n, successes=conv[v])} for v in ("v1", "v2")}, conv
            ),
            "errors": MetricData(arms_err, {"v1": n, "v2": n}),  # type: ignore[arg-type]
        },
        previous_state=previous.sequential_state if previous else {},
    )
    return summarize(SPEC, data, STATE)


def test_the_fixed_design_never_acts_after_its_final_look() -> None:
    # at the horizon: no significant difference -> hold
    snap = _look(HORIZON, {"v1": 400, "v2": 410}, {"v1": 0, "v2": 0}, None, 60)
    assert snap.recommendation == "hold", snap.reason
    actions = []
    # 60 more analyses while the candidate's rate climbs: the final look stays final
    for i in range(1, 61):
        n = HORIZON + 50 * i
        snap = _look(n, {"v1": n // 10, "v2": n // 10 + 8 * i}, {"v1": 0, "v2": 0}, snap, 60 + i)
        action = decide(snap, SPEC.policy, STATE, now=snap.cutoff)
        actions.append(action.kind)
    assert set(actions) == {"hold"}, actions
    # ... whereas an unfrozen test on the last look's data would have promoted
    fresh = _look(n, {"v1": n // 10, "v2": n // 10 + 8 * 60}, {"v1": 0, "v2": 0}, None, 200)
    assert fresh.recommendation == "promote v2", fresh.reason


def test_a_guardrail_blow_up_rolls_back_a_fixed_design_before_the_horizon() -> None:
    # error rate 0.33% -> 10% with a tenth of the planned sample
    n = HORIZON // 10
    snap = _look(n, {"v1": 40, "v2": 41}, {"v1": 1, "v2": 40}, None, 30)
    conv = snap.metrics[0].comparisons[0]
    assert conv.status == "before_horizon"  # the primary decides nothing yet
    action = decide(snap, SPEC.policy, STATE, now=snap.cutoff)
    assert action.kind == "rollback", action.reason
    assert action.reason.startswith("guardrail breach: errors worse in v2")
