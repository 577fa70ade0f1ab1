"""Decision table of the pure policy engine: one test per path of docs/policy.md."""

from __future__ import annotations

from datetime import timedelta

import pytest

from abstats.engine.rules import bandit_seed, decide
from abstats.engine.snapshot import Comparison
from abstats.engine.specs import Policy
from abstats.engine.words import effect as describe_effect
from tests.control.snapshots import (
    T0,
    comparison,
    drift_check,
    good_guardrail,
    guardrail,
    past,
    primary,
    snapshot,
    state,
)

NOW = T0 + timedelta(days=1)
NO_RAMP = {"ramp": None}


def winning() -> Comparison:
    return comparison(effect=0.041, lo=0.012, hi=0.070, p=0.003, better=True)


def policy(**overrides: object) -> Policy:
    return Policy.model_validate({**NO_RAMP, **overrides})


def test_promotes_when_primary_better_and_guardrails_non_inferior() -> None:
    action = decide(
        snapshot([primary(winning()), good_guardrail()]), policy(), state(), now=NOW, snapshot_id=7
    )
    assert action.kind == "promote"
    assert action.record
    assert action.winner == "v2"
    assert action.new_status == "concluded"
    assert action.new_weights == {"v1": 0.0, "v2": 100.0}
    assert action.retire == ("v1",)
    assert action.reason == (
        "promote v2: v2 conversion +4.1% [+1.2%, +7.0%], always-valid p=0.003 < 0.05 after Holm; "
        "latency_p95 non-inferior (margin 10%)"
    )
    assert action.evidence["snapshot_id"] == 7
    assert action.evidence["trigger"] == "primary_better"
    assert {c["metric"] for c in action.evidence["comparisons"]} == {"conversion", "latency_p95"}


def test_promote_keeps_losers_when_cleanup_is_off() -> None:
    p = policy(cleanup={"retire_losers": False})
    action = decide(snapshot([primary(winning()), good_guardrail()]), p, state(), now=NOW)
    assert action.kind == "promote" and action.retire == ()


def test_mode_off_does_nothing() -> None:
    action = decide(snapshot([primary(winning())]), policy(mode="off"), state(), now=NOW)
    assert action.kind == "none" and not action.record


def test_not_running_does_nothing() -> None:
    action = decide(snapshot([primary(winning())]), policy(), state(status="paused"), now=NOW)
    assert action.kind == "none" and not action.record


def test_no_data_yet() -> None:
    empty = snapshot([primary()], units={"v1": 0, "v2": 0}, gates_met=False)
    action = decide(empty, policy(), state(), now=NOW)
    assert action.kind == "keep_running" and not action.record
    assert "no data yet" in action.reason


def test_below_gates_never_promotes_even_with_a_significant_primary() -> None:
    early = snapshot(
        [primary(winning()), good_guardrail()], units={"v1": 120, "v2": 130}, gates_met=False
    )
    action = decide(early, policy(), state(), now=NOW)
    assert action.kind == "keep_running" and not action.record
    assert "below the minimum-sample gates" in action.reason
    assert "< 500" in action.reason


def test_guardrail_not_yet_non_inferior_blocks_promotion() -> None:
    pending = guardrail(
        comparison(effect=0.02, lo=-0.05, hi=0.15, p=0.4, non_inferior=False, margin="10%")
    )
    action = decide(snapshot([primary(winning()), pending]), policy(), state(), now=NOW)
    assert action.kind == "keep_running"


def test_lift_below_min_lift_is_not_promoted() -> None:
    action = decide(
        snapshot([primary(winning()), good_guardrail()]),
        policy(promote={"min_lift": "5%"}),
        state(),
        now=NOW,
    )
    assert action.kind == "keep_running"
    action = decide(
        snapshot([primary(winning()), good_guardrail()]),
        policy(promote={"min_lift": "4%"}),
        state(),
        now=NOW,
    )
    assert action.kind == "promote" and "min_lift 4%" in action.reason


def test_min_lift_absolute_uses_the_absolute_effect() -> None:
    # winning(): absolute effect 0.0041
    action = decide(
        snapshot([primary(winning()), good_guardrail()]),
        policy(promote={"min_lift": 0.005}),
        state(),
        now=NOW,
    )
    assert action.kind == "keep_running"
    action = decide(
        snapshot([primary(winning()), good_guardrail()]),
        policy(promote={"min_lift": 0.004}),
        state(),
        now=NOW,
    )
    assert action.kind == "promote"


def test_holm_adjusted_p_value_decides_not_the_raw_one() -> None:
    c = winning().model_copy(update={"p_value": 0.01, "p_value_adjusted": 0.08})
    action = decide(snapshot([primary(c), good_guardrail()]), policy(), state(), now=NOW)
    assert action.kind == "keep_running"


def test_decrease_direction_primary_lift_sign() -> None:
    c = comparison(effect=-0.06, lo=-0.09, hi=-0.03, p=0.001, better=True)
    action = decide(
        snapshot([primary(c, direction="decrease")]),
        policy(promote={"min_lift": "5%"}),
        state(),
        now=NOW,
    )
    assert action.kind == "promote"


def test_guardrail_breach_rolls_back() -> None:
    breach = guardrail(
        comparison(
            effect=0.25, lo=0.12, hi=0.40, p=0.0004, worse=True, non_inferior=False, margin="10%"
        )
    )
    action = decide(snapshot([primary(winning()), breach]), policy(), state(), now=NOW)
    assert action.kind == "rollback" and action.record
    assert action.new_status == "rolled_back"
    assert action.new_weights == {"v1": 100.0, "v2": 0.0}
    assert action.reason.startswith(
        "guardrail breach: latency_p95 worse in v2: +25.0% [+12.0%, +40.0%]"
    )
    assert action.evidence["trigger"] == "guardrail"


def test_guardrail_breach_during_a_ramp_step_rolls_back() -> None:
    breach = guardrail(
        comparison(effect=0.25, lo=0.12, hi=0.40, p=0.0004, worse=True, non_inferior=False)
    )
    ramped = state(weights={"v1": 95.0, "v2": 5.0})
    action = decide(
        snapshot([primary(), breach], units={"v1": 9500, "v2": 600}), Policy(), ramped, now=NOW
    )
    assert action.kind == "rollback"


def test_guardrail_breach_with_rollback_off_blocks_promotion_and_ramp() -> None:
    breach = guardrail(
        comparison(effect=0.25, lo=0.12, hi=0.40, p=0.0004, worse=True, non_inferior=False)
    )
    p = policy(rollback={"on_guardrail_breach": False})
    action = decide(snapshot([primary(winning()), breach]), p, state(), now=NOW)
    assert action.kind == "keep_running"
    assert "on_guardrail_breach is off" in action.reason
    ramped = state(weights={"v1": 95.0, "v2": 5.0})
    action = decide(
        snapshot([primary(), breach]),
        Policy(rollback={"on_guardrail_breach": False}),
        ramped,
        now=NOW,
    )  # type: ignore[arg-type]
    assert action.kind == "keep_running"


def test_primary_significantly_worse_rolls_back() -> None:
    losing = comparison(effect=-0.05, lo=-0.08, hi=-0.02, p=0.001, worse=True)
    action = decide(snapshot([primary(losing), good_guardrail()]), policy(), state(), now=NOW)
    assert action.kind == "rollback"
    assert action.reason.startswith("primary worse: v2 conversion -5.0% [-8.0%, -2.0%]")


def test_primary_worse_without_rollback_rule_keeps_running() -> None:
    losing = comparison(effect=-0.05, lo=-0.08, hi=-0.02, p=0.001, worse=True)
    action = decide(
        snapshot([primary(losing)]), policy(rollback={"on_primary_worse": False}), state(), now=NOW
    )
    assert action.kind == "keep_running"


@pytest.mark.parametrize("on_srm", ["pause", "rollback", "warn"])
def test_srm_never_promotes_and_follows_on_srm(on_srm: str) -> None:
    bad = snapshot([primary(winning()), good_guardrail()], srm_flagged=True)
    action = decide(bad, policy(on_srm=on_srm), state(), now=NOW)
    expected = {
        "pause": ("pause", "paused"),
        "rollback": ("rollback", "rolled_back"),
        "warn": ("invalid_srm", None),
    }
    assert (action.kind, action.new_status) == expected[on_srm]
    assert action.record
    assert "invalid: SRM" in action.reason
    # counts read as the recommendation's do (abstats.engine.words), not as Python dicts
    assert "observed v1 5,000, v2 5,000, expected v1 5,000.0, v2 5,000.0" in action.reason
    assert action.evidence["trigger"] == "srm"


def test_an_srm_warning_does_not_silence_a_guardrail_breach() -> None:
    breach = guardrail(
        comparison(effect=0.25, lo=0.12, hi=0.40, p=0.0004, worse=True, non_inferior=False,
                   margin="10%")
    )  # fmt: skip
    bad = snapshot([primary(winning()), breach], srm_flagged=True)
    action = decide(bad, policy(on_srm="warn"), state(), now=NOW)
    assert action.kind == "rollback", action.reason
    assert "invalid: SRM" in action.reason and "guardrail breach" in action.reason


def test_srm_warning_is_recorded_once() -> None:
    bad = snapshot([primary()], srm_flagged=True)
    action = decide(bad, policy(on_srm="warn"), state(history=(past("invalid_srm"),)), now=NOW)
    assert action.kind == "invalid_srm" and not action.record


@pytest.mark.parametrize(("on_drift", "kind"), [("pause", "pause"), ("rollback", "rollback")])
def test_drift_follows_on_drift(on_drift: str, kind: str) -> None:
    s = snapshot([primary(winning()), good_guardrail()], drift=[drift_check()])
    action = decide(s, policy(on_drift=on_drift), state(), now=NOW)
    assert action.kind == kind
    assert "drift: v2 score (PSI 0.31)" in action.reason


def test_drift_warn_notes_and_goes_on() -> None:
    s = snapshot([primary(winning()), good_guardrail()], drift=[drift_check()])
    action = decide(s, policy(on_drift="warn"), state(), now=NOW)
    assert action.kind == "promote"
    assert "drift warning: v2 score" in action.reason
    assert action.evidence["drift_warning"][0]["target"] == "score"


def test_inconclusive_at_max_sample_holds_and_never_promotes() -> None:
    flat = comparison(effect=0.004, lo=-0.01, hi=0.018, p=0.4)
    p = policy(max_units_per_variant=5000)
    action = decide(snapshot([primary(flat), good_guardrail()]), p, state(), now=NOW)
    assert action.kind == "hold" and action.record
    assert action.new_weights is None and action.new_status is None
    assert action.reason.startswith(
        "hold: inconclusive at max sample (5000 units per variant reached)"
    )
    again = decide(
        snapshot([primary(flat), good_guardrail()]), p, state(history=(past("hold"),)), now=NOW
    )
    assert again.kind == "hold" and not again.record


def test_fixed_horizon_decides_only_at_the_planned_sample() -> None:
    p = policy(inference="fixed", max_units_per_variant=10_000)
    early = decide(snapshot([primary(winning()), good_guardrail()]), p, state(), now=NOW)
    assert early.kind == "keep_running"
    losing = comparison(effect=-0.05, lo=-0.08, hi=-0.02, p=0.001, worse=True)
    assert decide(snapshot([primary(losing)]), p, state(), now=NOW).kind == "keep_running"
    at_horizon = snapshot(
        [primary(winning()), good_guardrail()], units={"v1": 10_000, "v2": 10_000}
    )
    assert decide(at_horizon, p, state(), now=NOW).kind == "promote"


# --- ramp ---------------------------------------------------------------------------------------

RAMP = {"ramp": {"steps": [5, 25, 50, 100], "min_interval": "30m"}}


def test_ramp_advances_when_guardrails_hold_and_interval_passed() -> None:
    s = snapshot([primary(winning()), good_guardrail()], cutoff=T0 + timedelta(minutes=45))
    action = decide(s, Policy.model_validate(RAMP), state(weights={"v1": 95.0, "v2": 5.0}), now=NOW)
    assert action.kind == "advance_ramp" and action.record
    assert action.new_weights == {"v1": 75.0, "v2": 25.0}
    assert action.reason.startswith("advance ramp 5% -> 25%: latency_p95 non-inferior (margin 10%)")
    assert action.evidence["from_step"] == 5 and action.evidence["to_step"] == 25


def test_ramp_waits_for_min_interval_on_the_data_clock() -> None:
    # the wall clock (NOW) is a day later, but the data only covers 10 minutes of this step
    s = snapshot([primary(), good_guardrail()], cutoff=T0 + timedelta(minutes=10))
    action = decide(s, Policy.model_validate(RAMP), state(weights={"v1": 95.0, "v2": 5.0}), now=NOW)
    assert action.kind == "keep_running"
    assert "observed for 10.0 min < min_interval 30.0 min" in action.reason


def test_ramp_needs_a_snapshot_of_the_current_step() -> None:
    s = snapshot([primary(), good_guardrail()], weight_epoch=0)
    action = decide(
        s, Policy.model_validate(RAMP), state(weights={"v1": 95.0, "v2": 5.0}, epoch=1), now=NOW
    )
    assert action.kind == "keep_running" and "weight epoch 0" in action.reason


def test_ramp_waits_until_every_guardrail_is_non_inferior() -> None:
    pending = guardrail(comparison(effect=0.02, lo=-0.05, hi=0.15, p=0.4, non_inferior=False))
    action = decide(
        snapshot([primary(), pending]),
        Policy.model_validate(RAMP),
        state(weights={"v1": 95.0, "v2": 5.0}),
        now=NOW,
    )
    assert action.kind == "keep_running"
    assert "guardrails not yet non-inferior: latency_p95 in v2" in action.reason


def test_primary_better_at_an_early_step_advances_instead_of_promoting() -> None:
    action = decide(
        snapshot([primary(winning()), good_guardrail()]),
        Policy.model_validate(RAMP),
        state(weights={"v1": 75.0, "v2": 25.0}),
        now=NOW,
    )
    assert action.kind == "advance_ramp"
    assert action.new_weights == {"v1": 50.0, "v2": 50.0}


def test_promotes_at_the_promotion_step() -> None:
    action = decide(
        snapshot([primary(winning()), good_guardrail()]),
        Policy.model_validate(RAMP),
        state(weights={"v1": 50.0, "v2": 50.0}),
        now=NOW,
    )
    assert action.kind == "promote"


def test_ramp_with_two_candidates_splits_the_step() -> None:
    s = snapshot(
        [
            primary(comparison("v2"), comparison("v3")),
            guardrail(*(comparison(v, non_inferior=True) for v in ("v2", "v3"))),
        ],
        units={"v1": 9000, "v2": 600, "v3": 600},
    )
    st = state(weights={"v1": 90.0, "v2": 5.0, "v3": 5.0}, variants=("v1", "v2", "v3"))
    for steps in ([10, 50], [10, 50, 100]):  # 50 is the promotion step either way
        action = decide(s, Policy.model_validate({"ramp": {"steps": steps}}), st, now=NOW)
        assert action.kind == "advance_ramp"
        assert action.new_weights == {"v1": 50.0, "v2": 25.0, "v3": 25.0}
    at_top = state(weights={"v1": 50.0, "v2": 25.0, "v3": 25.0}, variants=("v1", "v2", "v3"))
    action = decide(s, Policy.model_validate({"ramp": {"steps": [10, 50]}}), at_top, now=NOW)
    assert action.kind == "keep_running"  # at the promotion step, nothing is better yet


def test_manual_reweight_resets_the_ramp_to_the_nearest_step() -> None:
    # a person set v2 to 30%: nearest step is 25, so the next advance goes to 50
    s = snapshot([primary(), good_guardrail()])
    action = decide(
        s, Policy.model_validate(RAMP), state(weights={"v1": 70.0, "v2": 30.0}), now=NOW
    )
    assert action.kind == "advance_ramp" and action.new_weights == {"v1": 50.0, "v2": 50.0}


# --- bandit and modes ---------------------------------------------------------------------------


def test_bandit_reweights_by_the_allocator() -> None:
    p = policy(bandit={"algorithm": "thompson", "floor": 10})
    calls = []

    def allocator(metric, arms, floor, seed):  # type: ignore[no-untyped-def]
        calls.append((metric.metric, list(arms), floor, seed))
        return {"v1": 20.0, "v2": 80.0}

    snap = snapshot([primary(comparison())])
    action = decide(snap, p, state(), now=NOW, snapshot_id=3, allocator=allocator)
    # seeded by the snapshot's cut-off, so the recommendation on the same snapshot draws the same
    assert calls == [("conversion", ["v1", "v2"], 10.0, bandit_seed(snap))]
    assert action.kind == "reweight" and action.new_weights == {"v1": 20.0, "v2": 80.0}
    small = decide(
        snapshot([primary(comparison())]),
        p,
        state(),
        now=NOW,
        allocator=lambda *a: {"v1": 50.5, "v2": 49.5},
    )
    assert small.kind == "keep_running"


def test_bandit_thompson_favours_the_better_arm_and_keeps_the_floor() -> None:
    p = policy(bandit={"algorithm": "thompson", "floor": 10})
    m = primary(comparison())
    m.variants["v1"] = m.variants["v1"].model_copy(update={"value": 0.10})
    m.variants["v2"] = m.variants["v2"].model_copy(update={"value": 0.12})
    action = decide(snapshot([m]), p, state(), now=NOW, snapshot_id=1)
    assert action.kind == "reweight"
    assert action.new_weights is not None
    assert action.new_weights["v2"] > 80.0
    assert action.new_weights["v1"] >= 10.0 - 1e-9
    assert sum(action.new_weights.values()) == pytest.approx(100.0)


def test_recommend_mode_does_not_repeat_the_same_recommendation() -> None:
    s = snapshot([primary(winning()), good_guardrail()])
    first = decide(s, policy(mode="recommend"), state(), now=NOW)
    assert first.kind == "promote" and first.record
    again = decide(
        s,
        policy(mode="recommend"),
        state(history=(past("promote", applied=False, weights_after={"v1": 0.0, "v2": 100.0}),)),
        now=NOW,
    )
    assert again.kind == "promote" and not again.record


def test_effect_formatting_for_absolute_and_infinite_bounds() -> None:
    c = comparison(effect=0.0).model_copy(
        update={
            "ci_scale": "absolute",
            "absolute_effect": 0.0123,
            "ci_lower": 0.003,
            "ci_upper": float("inf"),
        }
    )
    assert describe_effect(c) == "+0.0123 [+0.003, +inf]"


def test_rollbacks_share_one_family_wise_budget() -> None:
    """Issue 13 item 7: every test that can roll back (guardrails x candidates, primaries x
    candidates) shares alpha: each runs at alpha / m."""
    breach = guardrail(
        comparison(effect=0.25, lo=0.12, hi=0.40, p=0.01, worse=True, non_inferior=False,
                   margin="10%")
    )  # fmt: skip
    alone = snapshot([primary(winning()), breach])
    assert decide(alone, policy(), state(), now=NOW).kind == "rollback"
    # with 3 guardrails x 2 candidates + 2 primaries: p = 0.01 > 0.05 / 8
    family = alone.model_copy(update={"rollback_tests": 8})
    action = decide(family, policy(), state(), now=NOW)
    assert action.kind != "rollback", action.reason
    worse = primary(comparison(effect=-0.05, lo=-0.09, hi=-0.01, p=0.02, worse=True))
    assert decide(snapshot([worse]), policy(), state(), now=NOW).kind == "rollback"
    many = snapshot([worse]).model_copy(update={"rollback_tests": 4})
    assert decide(many, policy(), state(), now=NOW).kind != "rollback"


def test_a_ramp_step_is_observed_from_the_routers_confirmation() -> None:
    from dataclasses import replace

    s = snapshot([primary(), good_guardrail()], cutoff=T0 + timedelta(hours=2))
    ramped = state(weights={"v1": 95.0, "v2": 5.0})
    assert decide(s, Policy.model_validate(RAMP), ramped, now=NOW).kind == "advance_ramp"
    pending = replace(ramped, epoch_pending=True)
    action = decide(s, Policy.model_validate(RAMP), pending, now=NOW)
    assert action.kind == "keep_running" and "waiting for the router" in action.reason
    late = replace(ramped, epoch_confirmed_at=T0 + timedelta(hours=1, minutes=45))
    action = decide(s, Policy.model_validate(RAMP), late, now=NOW)
    assert action.kind == "keep_running" and "observed for 15.0 min" in action.reason
