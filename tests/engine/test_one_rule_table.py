"""The recommendation in a snapshot is the decision the same policy would take: there is one rule
table (abstats.engine.rules). Generated from sufficient statistics through ``summarize``, the very
path the analysis runs, so the snapshots are consistent as real ones are (not hand-set flags)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstats.engine.rules import ExperimentState, decide, recommend
from abstats.engine.specs import ExperimentSpec
from abstats.engine.summarize import Aggregates, EpochWeights, MetricData, summarize
from abstats.stats import MeanStats, ProportionStats

T0 = datetime(2026, 11, 1, tzinfo=UTC)
METRICS = [
    {
        "key": "conversion",
        "kind": "proportion",
        "outcome": "c",
        "role": "primary",
        "direction": "increase",
    },
    {
        "key": "revenue",
        "kind": "mean",
        "outcome": "r",
        "role": "guardrail",
        "direction": "increase",
        "margin": "5%",
    },
]


@st.composite
def looks(draw: st.DrawFn) -> tuple[ExperimentSpec, Aggregates, ExperimentState]:
    n_control = draw(st.integers(0, 20_000))
    n_treat = draw(st.integers(0, 20_000))
    rate_c = draw(st.floats(0.01, 0.5))
    rate_t = draw(st.floats(0.01, 0.5))
    mean_c, mean_t = draw(st.floats(1, 100)), draw(st.floats(1, 100))
    sd = draw(st.floats(0.1, 50))
    policy = {
        "min_units_per_variant": draw(st.sampled_from([0, 500, 5_000])),
        "min_events_per_variant": draw(st.sampled_from([0, 50])),
        "min_runtime": draw(st.sampled_from(["0s", "1h"])),
        "on_srm": draw(st.sampled_from(["pause", "rollback", "warn"])),
        "ramp": draw(st.sampled_from([None, {"steps": [5, 50, 100], "min_interval": "10m"}])),
        "rollback": {"on_guardrail_breach": draw(st.booleans()), "on_primary_worse": True},
    }
    if policy["ramp"] is None and draw(st.booleans()):
        policy["bandit"] = {"floor": 10, "metric": draw(st.sampled_from(["conversion", "revenue"]))}
    spec = ExperimentSpec.parse(
        key="exp", control="v1", variants=["v1", "v2"], metrics=METRICS, policy=policy
    )
    share = draw(st.sampled_from([5.0, 50.0]))
    weights = {"v1": 100 - share, "v2": share}
    observed_t = draw(st.sampled_from([share, 50.0]))  # sometimes a sample ratio mismatch
    units_v2 = int((n_control + n_treat) * observed_t / 100)
    units = {"v1": n_control + n_treat - units_v2, "v2": units_v2}

    def proportion(n: int, rate: float) -> ProportionStats:
        return ProportionStats(n=n, successes=round(n * rate))

    def mean(n: int, m: float) -> MeanStats:
        return MeanStats(n=n, sum=n * m, sum_squares=n * (m * m + sd * sd))

    data = Aggregates(
        cutoff=T0 + timedelta(hours=draw(st.floats(0.1, 48))),
        epochs=[EpochWeights(1, T0, weights)],
        units=units,
        units_by_epoch={"1": units},
        mixed_units=0,
        first_seen=T0,
        metrics={
            "conversion": MetricData(
                {
                    "v1": {1: proportion(units["v1"], rate_c)},
                    "v2": {1: proportion(units["v2"], rate_t)},
                },
                {"v1": int(units["v1"] * rate_c), "v2": int(units["v2"] * rate_t)},
            ),
            "revenue": MetricData(
                {"v1": {1: mean(units["v1"], mean_c)}, "v2": {1: mean(units["v2"], mean_t)}},
                units,
            ),
        },
    )
    state = ExperimentState(
        status="running",
        control="v1",
        variants=("v1", "v2"),
        weights=weights,
        weight_epoch=1,
        epoch_started_at=T0,
    )
    return spec, data, state


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(looks())
def test_the_recommendation_is_the_decision(
    look: tuple[ExperimentSpec, Aggregates, ExperimentState],
) -> None:
    spec, data, state = look
    snapshot = summarize(spec, data, state)
    action = decide(snapshot, spec.policy, state, now=data.cutoff + timedelta(minutes=1))
    assert snapshot.recommendation == action.label
    assert snapshot.reason == action.reason
    again = recommend(snapshot, spec.policy, state)
    assert (again.kind, again.new_weights, again.new_status) == (
        action.kind,
        action.new_weights,
        action.new_status,
    )


@settings(max_examples=50, deadline=None)
@given(looks())
def test_a_recommend_mode_policy_recommends_what_auto_would_do(
    look: tuple[ExperimentSpec, Aggregates, ExperimentState],
) -> None:
    spec, data, state = look
    quiet = spec.model_copy(update={"policy": spec.policy.model_copy(update={"mode": "recommend"})})
    assert (
        summarize(quiet, data, state).recommendation == summarize(spec, data, state).recommendation
    )
