"""The rule table: snapshot + policy + the experiment's state -> one action.

Pure code (no database, no HTTP; import-linter contract). The one place where abstats judges:
``decide()`` is evaluated after every analysis snapshot by the control service, which records the
action as a decision and, in policy mode ``auto``, applies it; ``recommend()`` is the same table
evaluated without applying anything, and is what a snapshot's ``recommendation`` says. Every
sentence comes from :mod:`abstats.engine.words`.

Order of the rules (``docs/policy.md``):

1. mode ``off``, or the experiment is not running: nothing.
2. Minimum-sample gates (units and primary events per variant, runtime): until all are met,
   nothing is decided ("keep running").
3. Sample ratio mismatch: the data cannot be trusted, so promotion and ramp advances are blocked
   and ``on_srm`` says what happens (pause, rollback, or a recorded warning; with a warning a
   guardrail breach or a worse primary still rolls back).
4. Drift flagged: ``on_drift`` (pause, rollback; ``warn`` only notes it and goes on).
5. A guardrail breach in any candidate: rollback (``rollback.on_guardrail_breach``). A breach is
   harm beyond the guardrail's margin: the whole interval lies past the margin on the bad side
   (without a margin: any significant harm).
6. A primary metric significantly worse in any candidate: rollback (``rollback.on_primary_worse``).
   Rules 5 and 6 share one family-wise error budget: with ``m`` tests that can roll back
   (``SnapshotResult.rollback_tests``), each runs at ``alpha / m`` (Bonferroni), and the
   guardrails' two-sided intervals are computed at that level.
7. At the promotion step (no ramp, bandit mode, or the highest ramp step below 100): promote the
   candidate whose primary is better with adjusted p < alpha and lift >= ``promote.min_lift``,
   with every guardrail proven non-inferior.
8. Every variant at ``max_units_per_variant`` and nothing to promote: hold (inconclusive).
9. Ramp below the promotion step: advance when the snapshot was taken at the current step, every
   guardrail of every candidate is non-inferior, and ``min_interval`` has passed.
10. Bandit: reweight by Thompson sampling with a floor.
11. Otherwise keep running.

Clock: every duration is measured on the snapshot's data cut-off (the newest event folded into the
analysis), not on the wall clock, so "min_interval has passed" means "the step has been *observed*
for min_interval". ``now`` only caps a cut-off that lies in the future.

With ``inference: fixed`` the primary metric decides nothing before the planned sample
(``max_units_per_variant`` in every variant); guardrail rollbacks stay active.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from abstats.engine import ramp, words
from abstats.engine.bandit import thompson_shares
from abstats.engine.snapshot import Comparison, MetricResult, SnapshotResult
from abstats.engine.specs import Amount, Policy

ActionKind = Literal[
    "promote",
    "rollback",
    "advance_ramp",
    "reweight",
    "pause",
    "keep_running",
    "hold",
    "invalid_srm",
    "none",
]

# Actions that change weights or status when applied. The others are notes (hold, invalid_srm)
# or nothing at all (keep_running, none).
STATE_CHANGING = frozenset({"promote", "rollback", "advance_ramp", "reweight", "pause"})

# A bandit reweight smaller than this (percentage points of share) is not worth a new epoch.
BANDIT_MIN_CHANGE = 1.0


@dataclass(frozen=True)
class PastDecision:
    """What ``decide`` needs to know of an earlier decision (newest first in the history)."""

    action: str
    actor: str
    applied: bool
    snapshot_id: int | None
    status_after: str | None
    weights_after: Mapping[str, float] | None
    created_at: datetime


@dataclass(frozen=True)
class ExperimentState:
    status: str
    control: str
    variants: Sequence[str]
    weights: Mapping[str, float]
    weight_epoch: int
    epoch_started_at: datetime
    retired: frozenset[str] = frozenset()
    history: Sequence[PastDecision] = ()
    # when the router confirmed the current weights (None: when the epoch started), and whether
    # it has not confirmed them yet: a ramp step is observed from the confirmation on
    epoch_confirmed_at: datetime | None = None
    epoch_pending: bool = False

    @property
    def candidates(self) -> list[str]:
        return [v for v in self.variants if v != self.control and v not in self.retired]


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    reason: str
    new_weights: dict[str, float] | None = None
    new_status: str | None = None
    winner: str | None = None
    retire: tuple[str, ...] = ()
    evidence: dict[str, Any] = field(default_factory=dict)
    record: bool = False  # whether it becomes a decision row

    @property
    def changes_state(self) -> bool:
        return self.kind in STATE_CHANGING

    @property
    def label(self) -> str:
        """A short label: the action, and the winner of a promotion (``promote v2``)."""
        return f"promote {self.winner}" if self.kind == "promote" and self.winner else self.kind


# (bandit metric's result, arms, floor in percent, seed) -> shares in percent, or None when the
# metric has no usable data yet
Allocator = Callable[[MetricResult, Sequence[str], float, int], dict[str, float] | None]


# --- sentences (words.py) and evidence -----------------------------------------------------------


def describe_primary(metric: MetricResult, c: Comparison, alpha: float) -> str:
    return words.primary_clause(metric, c, alpha, adjusted=c.p_value_adjusted is not None)


describe_guardrail = words.guardrail_clause


def _comparison_evidence(metric: MetricResult, c: Comparison) -> dict[str, Any]:
    return {"metric": metric.metric, "role": metric.role, **c.model_dump(mode="json")}


# --- predicates on comparisons ------------------------------------------------------------------


def _ok(c: Comparison) -> bool:
    return c.status == "ok"


def is_better(c: Comparison, alpha: float) -> bool:
    p = c.decision_p_value
    return _ok(c) and c.better is True and (p is None or p < alpha)


def is_worse(c: Comparison, alpha: float) -> bool:
    p = c.decision_p_value
    return _ok(c) and c.worse is True and (p is None or p < alpha)


def is_breach(metric: MetricResult, c: Comparison, alpha: float) -> bool:
    """Harm beyond the guardrail's margin: significantly worse, and the whole interval lies past
    the margin on the bad side (without a margin, significantly worse is enough)."""
    if not is_worse(c, alpha):
        return False
    margin: Amount | None = c.margin
    if margin is None:
        return True
    if (c.ci_scale == "relative") != margin.relative:
        return True  # scales differ (a stored snapshot of an older kind): significance decides
    if metric.direction == "decrease":
        return c.ci_lower is not None and c.ci_lower > margin.value
    return c.ci_upper is not None and c.ci_upper < -margin.value


def rollback_tests(
    *, guardrails: int, primaries: int, treatments: int, on_primary_worse: bool
) -> int:
    """How many tests can roll an experiment back: the size of its one family-wise budget."""
    return max(1, treatments * (guardrails + (primaries if on_primary_worse else 0)))


def lift_in_good_direction(metric: MetricResult, c: Comparison, relative: bool) -> float | None:
    effect = c.relative_effect if relative else c.absolute_effect
    if effect is None:
        return None
    return -effect if metric.direction == "decrease" else effect


def _by_role(snapshot: SnapshotResult, role: str) -> list[MetricResult]:
    return [m for m in snapshot.metrics if m.role == role]


def _comparison(metric: MetricResult, variant: str) -> Comparison | None:
    return next((c for c in metric.comparisons if c.variant == variant), None)


# --- the engine ---------------------------------------------------------------------------------


def decide(
    snapshot: SnapshotResult,
    policy: Policy,
    state: ExperimentState,
    *,
    now: datetime,
    snapshot_id: int | None = None,
    allocator: Allocator | None = None,
) -> Action:
    """Evaluate ``policy`` on ``snapshot`` for an experiment in ``state`` (see module docstring).

    ``record`` on the result says whether it becomes a decision row (not for "keep running", and
    not for a note or an unapplied recommendation the newest decision already made).
    ``allocator`` computes bandit shares (percent) from the bandit metric's per-variant results;
    the default is Thompson sampling (``abstats.engine.bandit.thompson_shares``)."""
    action = _evaluate(snapshot, policy, state, now=now, allocator=allocator)
    evidence = {
        "snapshot_id": snapshot_id,
        "cutoff": snapshot.cutoff.isoformat(),
        "weight_epoch": snapshot.weight_epoch,
        "mode": policy.mode,
        **action.evidence,
    }
    record = action.kind not in ("keep_running", "none") and not _repeats(action, state)
    return replace(action, evidence=evidence, record=record)


def recommend(
    snapshot: SnapshotResult,
    policy: Policy,
    state: ExperimentState,
    *,
    allocator: Allocator | None = None,
) -> Action:
    """What the policy would decide on ``snapshot`` in ``state``, applied or not: the same rule
    table as :func:`decide` (a property test holds the two together), with the policy's mode
    and the experiment's status set aside so a recommendation is given for every snapshot."""
    as_running = replace(state, status="running")
    return _evaluate(
        snapshot,
        policy.model_copy(update={"mode": "auto"}),
        as_running,
        now=snapshot.cutoff,
        allocator=allocator,
    )


def bandit_seed(snapshot: SnapshotResult) -> int:
    """Thompson draws are seeded by the snapshot's cut-off, so a decision and the recommendation
    on the same snapshot draw the same shares, and a re-run draws them again."""
    return int(snapshot.cutoff.timestamp() * 1_000_000) % (2**32)


def _repeats(action: Action, state: ExperimentState) -> bool:
    """A note (hold, SRM warning) or a recommendation that the newest decision already made.

    In mode ``recommend`` nothing changes between snapshots, so without this the same
    recommendation would be recorded every few minutes.
    """
    if not state.history:
        return False
    last = state.history[0]
    if last.action != action.kind or last.actor != "policy":
        return False
    if action.kind in ("hold", "invalid_srm"):
        return True
    if last.applied:
        return False
    same_weights = action.new_weights is None or (
        last.weights_after is not None
        and not ramp.weights_differ(action.new_weights, last.weights_after, tolerance=1e-6)
    )
    return same_weights


def _evaluate(
    snapshot: SnapshotResult,
    policy: Policy,
    state: ExperimentState,
    *,
    now: datetime,
    allocator: Allocator | None,
) -> Action:
    if policy.mode == "off":
        return Action("none", "policy mode is off: abstats records no decision")
    if state.status != "running":
        return Action(
            "none", f"the experiment is {state.status}; only running experiments are decided"
        )
    candidates = state.candidates
    if not candidates:
        return Action("none", "no active candidate variant")
    alpha = policy.alpha

    # 2. gates
    gates = snapshot.gates
    if not gates.all_met:
        return Action(
            "keep_running", "below the minimum-sample gates: " + _unmet_gates(snapshot, policy)
        )

    notes: list[str] = []
    evidence: dict[str, Any] = {}
    srm_warning: Action | None

    # 3. sample ratio mismatch
    if snapshot.srm is not None and snapshot.srm.flagged:
        srm = snapshot.srm
        text = words.srm_clause(srm)
        evidence = {"trigger": "srm", "srm": srm.model_dump(mode="json")}
        if policy.on_srm == "pause":
            return Action("pause", f"{text}; on_srm=pause", new_status="paused", evidence=evidence)
        if policy.on_srm == "rollback":
            return _rollback(state, f"{text}; on_srm=rollback", evidence)
        # warn: promotion, ramp and bandit are blocked, but a breach can still roll back
        srm_warning = Action(
            "invalid_srm", f"{text}; on_srm=warn: promotion and ramp blocked", evidence=evidence
        )
        notes.append(text)
    else:
        srm_warning = None

    # 4. drift
    flagged = [d for d in snapshot.drift if d.flagged]
    if flagged:
        names = words.drift_names(flagged)
        drift_evidence = {
            "trigger": "drift",
            "drift": [
                d.model_dump(
                    mode="json", exclude={"reference_counts", "current_counts", "bin_labels"}
                )
                for d in flagged
            ],
        }
        if policy.on_drift == "pause":
            return Action(
                "pause",
                f"drift: {names}; on_drift=pause",
                new_status="paused",
                evidence=drift_evidence,
            )
        if policy.on_drift == "rollback":
            return _rollback(state, f"drift: {names}; on_drift=rollback", drift_evidence)
        notes.append(f"drift warning: {names}")
        evidence["drift_warning"] = drift_evidence["drift"]

    guardrails = _by_role(snapshot, "guardrail")
    primaries = _by_role(snapshot, "primary")
    # one family-wise budget for every test that can roll back (guardrails x candidates and, when
    # on, primaries x candidates): Bonferroni, each at alpha / m (docs/policy.md)
    rollback_alpha = alpha / max(snapshot.rollback_tests, 1)

    # 5. guardrail breach
    breaches = [
        (m, c)
        for m in guardrails
        for v in candidates
        if (c := _comparison(m, v)) is not None and is_breach(m, c, rollback_alpha)
    ]
    if breaches:
        text = "guardrail breach: " + "; ".join(describe_guardrail(m, c) for m, c in breaches)
        ev = {
            "trigger": "guardrail",
            "comparisons": [_comparison_evidence(m, c) for m, c in breaches],
        }
        if policy.rollback.on_guardrail_breach:
            return _with_notes(_rollback(state, text, ev), notes, evidence)
        notes.append(text + " (on_guardrail_breach is off: promotion and ramp blocked)")
        evidence.update(ev)

    at_horizon = policy.max_units_per_variant is not None and all(
        snapshot.units.get(v, 0) >= policy.max_units_per_variant
        for v in [state.control, *candidates]
    )
    primary_may_decide = policy.inference != "fixed" or at_horizon

    # 6. primary worse
    if primary_may_decide:
        worse = [
            (m, c)
            for m in primaries
            for v in candidates
            if (c := _comparison(m, v)) is not None and is_worse(c, rollback_alpha)
        ]
        if worse and policy.rollback.on_primary_worse:
            text = "primary worse: " + "; ".join(describe_primary(m, c, alpha) for m, c in worse)
            ev = {
                "trigger": "primary_worse",
                "comparisons": [_comparison_evidence(m, c) for m, c in worse],
            }
            return _with_notes(_rollback(state, text, ev), notes, evidence)
        if worse:
            notes.append(
                "primary worse (on_primary_worse is off): "
                + "; ".join(describe_primary(m, c, alpha) for m, c in worse)
            )

    if srm_warning is not None:  # nothing rolled back: the untrusted data decides nothing else
        return _with_notes(srm_warning, notes[1:], {})
    blocked = bool(breaches)
    steps = ramp.ramp_steps(policy.ramp) if policy.ramp is not None else []
    share = ramp.candidate_share(state.weights, candidates)
    step_index = ramp.nearest_step_index(policy.ramp, share) if policy.ramp is not None else None
    at_promotion_step = step_index is None or step_index == len(steps) - 1

    # 7. promotion
    if at_promotion_step and primary_may_decide and not blocked:
        promotion = _promotion(snapshot, policy, state, primaries, guardrails)
        if promotion is not None:
            return _with_notes(promotion, notes, evidence)

    # 8. hold at max sample
    if at_horizon:
        return _with_notes(
            Action(
                "hold",
                "hold: inconclusive at max sample ("
                f"{policy.max_units_per_variant} units per variant reached); "
                + _primary_summary(primaries, candidates, alpha),
                evidence={"trigger": "max_sample", "units": dict(snapshot.units)},
            ),
            notes,
            evidence,
        )

    # 9. ramp
    if policy.ramp is not None and step_index is not None and not at_promotion_step:
        return _with_notes(
            _ramp_step(
                snapshot, policy, state, steps, step_index, guardrails, now=now, blocked=blocked
            ),
            notes,
            evidence,
        )

    # 10. bandit
    if policy.bandit is not None and not blocked:
        bandit_action = _bandit(snapshot, policy, state, allocator or thompson_shares)
        if bandit_action is not None:
            return _with_notes(bandit_action, notes, evidence)

    reason = "keep running: " + _primary_summary(primaries, candidates, alpha)
    return _with_notes(Action("keep_running", reason), notes, evidence)


def _with_notes(action: Action, notes: list[str], evidence: dict[str, Any]) -> Action:
    if not notes and not evidence:
        return action
    reason = "; ".join([action.reason, *notes])
    return Action(
        kind=action.kind,
        reason=reason,
        new_weights=action.new_weights,
        new_status=action.new_status,
        winner=action.winner,
        retire=action.retire,
        evidence={**evidence, **action.evidence},
        record=action.record,
    )


def _unmet_gates(snapshot: SnapshotResult, policy: Policy) -> str:
    g = snapshot.gates
    if sum(snapshot.units.values()) == 0:
        return "no data yet"
    parts = []
    if not g.min_units_met:
        low = {v: n for v, n in g.units_per_variant.items() if n < policy.min_units_per_variant}
        parts.append(
            f"units per variant {words.counts(low or g.units_per_variant)}"
            f" < {policy.min_units_per_variant:,}"
        )
    if not g.min_events_met:
        low = {
            v: n
            for v, n in g.primary_events_per_variant.items()
            if n < policy.min_events_per_variant
        }
        parts.append(
            f"primary events per variant {words.counts(low or g.primary_events_per_variant)}"
            f" < {policy.min_events_per_variant:,}"
        )
    if not g.min_runtime_met:
        parts.append(
            f"runtime {words.duration(g.runtime_seconds)}"
            f" < {words.duration(policy.min_runtime_seconds)}"
        )
    return "; ".join(parts) or "gates not met"


def _rollback(state: ExperimentState, reason: str, evidence: dict[str, Any]) -> Action:
    return Action(
        "rollback",
        reason,
        new_weights=ramp.all_to(state.control, state.variants),
        new_status="rolled_back",
        evidence=evidence,
    )


def _primary_summary(
    primaries: Sequence[MetricResult], candidates: Sequence[str], alpha: float
) -> str:
    parts = [
        describe_primary(m, c, alpha)
        for m in primaries
        for v in candidates
        if (c := _comparison(m, v)) is not None and _ok(c)
    ]
    return "; ".join(parts) if parts else "no primary comparison available yet"


def _promotion(
    snapshot: SnapshotResult,
    policy: Policy,
    state: ExperimentState,
    primaries: Sequence[MetricResult],
    guardrails: Sequence[MetricResult],
) -> Action | None:
    """The best candidate that is better on a primary (by at least min_lift), worse on none, with
    every guardrail proven non-inferior; None when no candidate qualifies."""
    alpha = policy.alpha
    min_lift = policy.min_lift_amount
    best: tuple[float, str, list[tuple[MetricResult, Comparison]]] | None = None
    for v in state.candidates:
        comps = [(m, c) for m in primaries if (c := _comparison(m, v)) is not None]
        if not comps or any(is_worse(c, alpha) for _, c in comps):
            continue
        winning = [
            (m, c)
            for m, c in comps
            if is_better(c, alpha)
            and (lift := lift_in_good_direction(m, c, min_lift.relative)) is not None
            and lift >= min_lift.value
        ]
        if not winning:
            continue
        guards = [(m, _comparison(m, v)) for m in guardrails]
        if any(c is None or c.non_inferior is not True for _, c in guards):
            continue
        score = lift_in_good_direction(winning[0][0], winning[0][1], True) or 0.0
        if best is None or score > best[0]:
            best = (score, v, winning)
    if best is None:
        return None
    _, winner, winning = best
    guard_text = [
        describe_guardrail(m, c) for m in guardrails if (c := _comparison(m, winner)) is not None
    ]
    reason = "; ".join([describe_primary(m, c, alpha) for m, c in winning] + guard_text)
    if min_lift.value > 0:
        reason += f"; lift >= min_lift {min_lift}"
    retire = tuple(v for v in state.variants if v != winner) if policy.cleanup.retire_losers else ()
    comparisons = [_comparison_evidence(m, c) for m, c in winning]
    comparisons += [
        _comparison_evidence(m, c) for m in guardrails if (c := _comparison(m, winner)) is not None
    ]
    return Action(
        "promote",
        f"promote {winner}: {reason}",
        new_weights=ramp.all_to(winner, state.variants),
        new_status="concluded",
        winner=winner,
        retire=retire,
        evidence={"trigger": "primary_better", "comparisons": comparisons},
    )


def _ramp_step(
    snapshot: SnapshotResult,
    policy: Policy,
    state: ExperimentState,
    steps: Sequence[float],
    step_index: int,
    guardrails: Sequence[MetricResult],
    *,
    now: datetime,
    blocked: bool,
) -> Action:
    assert policy.ramp is not None
    current, following = steps[step_index], steps[step_index + 1]
    where = f"ramp step {words.ramp_step(current, following)}"
    if blocked:
        return Action("keep_running", f"{where} blocked")
    if snapshot.weight_epoch != state.weight_epoch:
        return Action(
            "keep_running",
            f"{where}: the snapshot is of weight epoch {snapshot.weight_epoch}, the current step is epoch {state.weight_epoch}",
        )
    if state.epoch_pending:
        return Action(
            "keep_running", f"{where}: waiting for the router to confirm this step's weights"
        )
    clock = min(snapshot.cutoff, now)
    observed = (clock - (state.epoch_confirmed_at or state.epoch_started_at)).total_seconds()
    needed = policy.ramp.min_interval_seconds
    if observed < needed:
        return Action(
            "keep_running",
            f"{where}: step observed for {words.duration(observed)} < min_interval {words.duration(needed)}",
        )
    pending = []
    proven = []
    for m in guardrails:
        for v in state.candidates:
            c = _comparison(m, v)
            if c is None or c.non_inferior is not True:
                pending.append(
                    f"{m.metric} in {v}"
                    + (f" ({words.effect(c)})" if c is not None else " (no result)")
                )
            else:
                proven.append((m, c))
    if pending:
        return Action(
            "keep_running", f"{where}: guardrails not yet non-inferior: {', '.join(pending)}"
        )
    guard_text = "; ".join(describe_guardrail(m, c) for m, c in proven) or "no guardrails defined"
    return Action(
        "advance_ramp",
        f"advance ramp {words.ramp_step(current, following)}: {guard_text}; step observed {words.duration(observed)} >= {words.duration(needed)}",
        new_weights=ramp.weights_for_step(following, state.control, state.candidates)
        | {v: 0.0 for v in state.retired},
        evidence={
            "trigger": "ramp",
            "from_step": current,
            "to_step": following,
            "comparisons": [_comparison_evidence(m, c) for m, c in proven],
        },
    )


def _bandit(
    snapshot: SnapshotResult,
    policy: Policy,
    state: ExperimentState,
    allocator: Allocator,
) -> Action | None:
    assert policy.bandit is not None
    metric_key = policy.bandit.metric
    metric = next(
        (
            m
            for m in snapshot.metrics
            if (m.metric == metric_key if metric_key else m.role == "primary")
        ),
        None,
    )
    if metric is None:
        return Action("keep_running", f"bandit: metric {metric_key!r} is not in the snapshot")
    arms = [state.control, *state.candidates]
    allocation = allocator(metric, arms, policy.bandit.floor, bandit_seed(snapshot))
    if allocation is None:
        return Action("keep_running", f"bandit: not enough data in {metric.metric} to allocate")
    new_weights = {v: allocation.get(v, 0.0) for v in state.variants}
    if not ramp.weights_differ(new_weights, state.weights, tolerance=BANDIT_MIN_CHANGE):
        return None
    shares_text = words.weights(new_weights)
    return Action(
        "reweight",
        f"bandit (Thompson sampling on {metric.metric}, floor {policy.bandit.floor:g}%): {shares_text}",
        new_weights=new_weights,
        evidence={
            "trigger": "bandit",
            "metric": metric.metric,
            "values": {
                v: metric.variants[v].model_dump(mode="json") for v in arms if v in metric.variants
            },
        },
    )
