"""The planner (issue 17, planning): fixed designs agree with statsmodels' power functions,
sequential designs with a simulation of the comparison the analysis runs, and a ramp's early
low-share steps are accounted for."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from pydantic import ValidationError
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    power_proportions_2indep,
    samplesize_proportions_2indep_onetail,
)

from abstats.engine.plan import Plan, PlanRequest, plan
from abstats.engine.rules import ExperimentState
from abstats.engine.snapshot import SnapshotResult
from abstats.engine.specs import ExperimentSpec
from abstats.engine.summarize import Aggregates, EpochWeights, MetricData, summarize
from abstats.engine.words import duration
from abstats.reports.model import ReportInputs, build_report
from abstats.reports.render import to_markdown
from abstats.reports.screenshot import sample_report
from abstats.stats import (
    InferenceDesign,
    ProportionStats,
    SequentialState,
    compare,
    spending_boundaries,
)


def test_fixed_proportion_agrees_with_statsmodels() -> None:
    result = plan(
        PlanRequest(
            kind="proportion", baseline=0.10, mde="10%", traffic_per_day=10_000, inference="fixed"
        )
    )
    # statsmodels: the one-tail sample size at alpha/2 (what a two-sided test needs, the far
    # tail being negligible), and the two-sided power at the planned sample
    reference = samplesize_proportions_2indep_onetail(
        diff=0.01, prop2=0.10, power=0.8, ratio=1, alpha=0.05, alternative="two-sided"
    )
    assert result.units_per_variant == math.ceil(reference)
    power = power_proportions_2indep(
        0.01, 0.10, result.units_per_variant, ratio=1, alpha=0.05, return_results=False
    )
    assert result.power == pytest.approx(power, abs=1e-6)
    assert 0.8 <= power < 0.8005
    # a 50/50 split of 10,000 units a day gives 5,000 per arm a day
    assert result.days_to_decision == pytest.approx(result.units_per_variant / 5000)


def test_fixed_mean_agrees_with_statsmodels() -> None:
    result = plan(
        PlanRequest(
            kind="mean",
            baseline=20.0,
            sd=8.0,
            mde=0.5,
            traffic_per_day=2_000,
            inference="fixed",
            alpha=0.01,
            power=0.9,
        )
    )
    reference = NormalIndPower().solve_power(
        effect_size=0.5 / 8.0, alpha=0.01, power=0.9, ratio=1.0, alternative="two-sided"
    )
    assert result.units_per_variant == math.ceil(reference)
    assert result.fixed_units_per_variant == result.units_per_variant
    assert result.sequential_inflation == 1.0


def _simulated_power(
    method: str, n: int, looks: int, base: float, lift: float, sims: int, seed: int
) -> float:
    """Share of simulated experiments in which :func:`abstats.stats.compare` with the planned
    design declares the effect by the planned sample, looking ``looks`` times."""
    rng = np.random.default_rng(seed)
    design = InferenceDesign(
        method=method,  # type: ignore[arg-type]
        alpha=0.05,
        mde_relative=lift,
        max_units_per_variant=n,
        min_units_per_variant=2,
    )
    edges = [round(n * (k + 1) / looks) for k in range(looks)]
    sizes = np.diff([0, *edges])
    c_succ = rng.binomial(sizes, base, size=(sims, looks)).cumsum(axis=1)
    t_succ = rng.binomial(sizes, base * (1 + lift), size=(sims, looks)).cumsum(axis=1)
    hits = 0
    for i in range(sims):
        state: SequentialState | None = None
        for k in range(looks):
            result = compare(
                ProportionStats(edges[k], int(c_succ[i, k])),
                ProportionStats(edges[k], int(t_succ[i, k])),
                design=design,
                previous=state,
            )
            state = result.state
            if result.significant:
                hits += 1
                break
    return hits / sims


T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _plan(method: str, looks: int) -> Plan:
    result = plan(
        PlanRequest(
            kind="proportion",
            baseline=0.2,
            mde="10%",
            traffic_per_day=20_000,
            inference=method,  # type: ignore[arg-type]
            looks=looks,
        )
    )
    assert result.units_per_variant > result.fixed_units_per_variant  # looking costs
    assert 0.8 <= result.power < 0.81
    return result


def test_always_valid_plan_agrees_with_simulation_of_compare() -> None:
    looks = 10
    result = _plan("always_valid", looks)
    simulated = _simulated_power(
        "always_valid", result.units_per_variant, looks, 0.2, 0.10, sims=300, seed=17
    )
    # the plan promises 80% power at its sample; the simulation must find it within 10%
    assert abs(simulated - result.power) <= 0.1 * result.power, simulated


def test_group_sequential_plan_agrees_with_simulation() -> None:
    """Vectorised: binomial data, the log-ratio z at each look against the Lan-DeMets
    boundaries (compare's own group-sequential path is tested in tests/stats)."""
    looks, sims = 20, 4000
    result = _plan("group_sequential", looks)
    n = result.units_per_variant
    rng = np.random.default_rng(18)
    edges = np.array([round(n * (k + 1) / looks) for k in range(looks)])
    sizes = np.diff(np.r_[0, edges])
    c = rng.binomial(sizes, 0.2, size=(sims, looks)).cumsum(axis=1)
    t = rng.binomial(sizes, 0.22, size=(sims, looks)).cumsum(axis=1)
    pc, pt = c / edges, t / edges
    z = np.log(pt / pc) / np.sqrt((1 - pt) / (pt * edges) + (1 - pc) / (pc * edges))
    bounds = np.array(spending_boundaries(list(edges / n), 0.05))
    simulated = float((np.abs(z) >= bounds).any(axis=1).mean())
    assert abs(simulated - result.power) <= 0.1 * result.power, simulated


def test_ramp_days_count_information_not_units() -> None:
    common = {
        "kind": "proportion",
        "baseline": 0.1,
        "mde": "5%",
        "traffic_per_day": 10_000,
        "inference": "fixed",
    }
    flat = plan(PlanRequest.model_validate({**common, "split": 50}))
    ramp = plan(
        PlanRequest.model_validate(
            {**common, "ramp": {"steps": [5, 25, 50], "step_duration": "1d"}}
        )
    )
    n = flat.units_per_variant
    assert ramp.units_per_variant == n
    # CMH information per day and arm: 2 s (1 - s) T; 5% and 25% held a day each, then 50%
    first, second = 2 * 0.05 * 0.95 * 10_000, 2 * 0.25 * 0.75 * 10_000
    expected = 2 + (n - first - second) / (0.5 * 10_000)
    assert ramp.days_to_decision == pytest.approx(expected)
    assert ramp.days_to_decision > flat.days_to_decision
    assert [s.candidate_share for s in ramp.steps] == [5, 25, 50]
    assert ramp.steps[0].units_per_candidate == 500 and ramp.steps[0].control_units == 9500
    assert "5% -> 25% -> 50%" in ramp.summary


def test_more_candidates_need_more_units_and_time() -> None:
    common = {"kind": "proportion", "baseline": 0.1, "mde": "5%", "traffic_per_day": 1e4}
    one = plan(PlanRequest.model_validate({**common, "inference": "fixed"}))
    two = plan(PlanRequest.model_validate({**common, "inference": "fixed", "candidates": 2}))
    assert two.alpha_per_comparison == pytest.approx(0.025)
    assert two.units_per_variant > one.units_per_variant
    assert two.days_to_decision > one.days_to_decision


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"kind": "mean", "baseline": 3.0, "mde": "5%", "traffic_per_day": 10}, "needs sd"),
        ({"kind": "proportion", "baseline": 1.5, "mde": "5%", "traffic_per_day": 10}, "rate"),
        ({"kind": "proportion", "baseline": 0.9, "mde": 0.2, "traffic_per_day": 10}, "leaves"),
        ({"kind": "proportion", "baseline": 0.1, "mde": "0%", "traffic_per_day": 10}, "positive"),
        (
            {
                "kind": "proportion",
                "baseline": 0.1,
                "mde": "5%",
                "traffic_per_day": 10,
                "split": 20,
                "ramp": {"steps": [5, 50]},
            },
            "either split or ramp",
        ),
        (
            {
                "kind": "proportion",
                "baseline": 0.1,
                "mde": "5%",
                "traffic_per_day": 10,
                "ramp": {"steps": [5, 100]},
            },
            "promotion",
        ),
    ],
)
def test_bad_requests_say_what_to_fix(body: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        PlanRequest.model_validate(body)


def _snapshot(policy: dict[str, object], n: int, successes: int) -> SnapshotResult:
    spec = ExperimentSpec.parse(
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
            {"key": "spend", "kind": "mean", "outcome": "s"},
        ],
        policy={"ramp": None, **policy},
    )
    data = Aggregates(
        cutoff=T0 + timedelta(hours=10),
        epochs=[EpochWeights(0, T0, {"v1": 1.0, "v2": 1.0})],
        units={"v1": n, "v2": n - 10},
        units_by_epoch={"0": {"v1": n, "v2": n - 10}},
        mixed_units=0,
        first_seen=T0,
        metrics={
            "conv": MetricData(
                {
                    "v1": {0: ProportionStats(n, successes)},
                    "v2": {0: ProportionStats(n - 10, successes)},
                },
                {"v1": successes, "v2": successes},
            )
        },
    )
    state = ExperimentState(
        status="running",
        control="v1",
        variants=("v1", "v2"),
        weights={"v1": 1.0, "v2": 1.0},
        weight_epoch=0,
        epoch_started_at=T0,
    )
    return summarize(spec, data, state)


def test_snapshot_and_report_show_progress_toward_the_planned_sample() -> None:
    snap = _snapshot({"mde": "10%"}, 2000, 200)  # always valid, no horizon: planned from data
    (progress,) = snap.progress  # one line per primary metric; the secondary has none
    expected = plan(
        PlanRequest(kind="proportion", baseline=0.1, mde="10%", traffic_per_day=1, looks=20)
    )
    assert progress.metric == "conv" and progress.source == "observed_control"
    assert progress.planned_units_per_variant == expected.units_per_variant
    assert progress.units_per_variant == 1990  # the smallest variant
    report = sample_report(T0)
    report_inputs = ReportInputs(
        experiment=report.experiment,
        snapshot=snap,
        snapshot_id=1,
        history=[],
        epochs=report.epochs,
        decisions=[],
        daily_units=[],
        generated_at=T0 + timedelta(hours=10),
    )
    (check,) = [c for c in build_report(report_inputs).checks if c.name == "Planned sample"]
    share = 1990 / expected.units_per_variant
    assert check.ok is None
    assert check.summary.startswith(
        f"conv: 1,990 of {expected.units_per_variant:,} units per variant ({share:.0%}), about "
    )
    # 1,990 units in 10 hours: the rest at the same rate
    more = (expected.units_per_variant - 1990) * 10 * 3600 / 1990
    assert check.summary.endswith(f"about {duration(more)} more at the current rate")
    assert check.summary in to_markdown(build_report(report_inputs))

    reached = _snapshot({"inference": "fixed", "max_units_per_variant": 1500}, 2000, 200)
    (progress,) = reached.progress
    assert (progress.source, progress.planned_units_per_variant) == ("policy", 1500)
    report_inputs = replace(report_inputs, snapshot=reached)
    (check,) = [c for c in build_report(report_inputs).checks if c.name == "Planned sample"]
    assert check.ok is True
    assert check.summary == "conv: 1,990 of 1,500 units per variant (100%), planned sample reached"
