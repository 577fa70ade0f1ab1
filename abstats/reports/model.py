"""The report model: everything a reader needs, in the order they need it, built from plain data
(the latest snapshot, a sample of the snapshot history, the weight epochs, the decisions and the
experiment's setup). Pure: no database; ``abstats.reports.service`` gathers the inputs and
``abstats.reports.render`` turns a ``Report`` into HTML, Markdown and JSON.

Every number shown in a report is copied from the snapshot (never recomputed), so the three
formats agree with ``GET .../analysis/latest`` by construction; the one estimate made here is
"units still needed" for a running experiment, from ``abstats.stats.required_units_per_arm``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from abstats.engine import words
from abstats.engine.snapshot import SnapshotResult
from abstats.engine.specs import Policy
from abstats.stats import required_units_per_arm

VerdictKind = Literal[
    "ship", "rolled_back", "keep_running", "inconclusive", "invalid", "paused", "draft"
]
# Units seen in two variants: a ramp moves some by design (a unit leaves a variant whose weight
# shrank); more than this share points at an assignment problem (e.g. a router not sticky).
MIXED_EXPOSURE_LIMIT = 0.05
# A running experiment whose newest event is older than this has probably lost its event feed.
FRESHNESS_LIMIT_SECONDS = 3600


@dataclass(frozen=True)
class ExperimentInfo:
    key: str
    name: str
    description: str
    status: str
    control: str
    winner: str | None
    variants: list[dict[str, Any]]  # key, model_version, metadata, retired
    metrics: list[dict[str, Any]]  # the metric specs as configured (shown in the setup)
    policy: Policy  # typed once (``abstats.experiments.state.experiment_spec``)
    router: dict[str, Any]
    started_at: datetime | None
    ended_at: datetime | None
    policy_spec: Policy = field(
        default_factory=Policy
    )  # the same, typed: what the report computes with


@dataclass(frozen=True)
class HistoryPoint:
    """One snapshot of the history, reduced to what the effect chart needs."""

    cutoff: datetime
    result: SnapshotResult


@dataclass(frozen=True)
class Epoch:
    epoch: int
    started_at: datetime
    ended_at: datetime | None
    weights: dict[str, float]


@dataclass(frozen=True)
class DecisionEntry:
    id: int
    created_at: datetime
    action: str
    actor: str
    reason: str
    applied: bool
    status_before: str | None
    status_after: str | None
    weights_before: dict[str, float] | None
    weights_after: dict[str, float] | None
    snapshot_id: int | None


@dataclass(frozen=True)
class ReportInputs:
    experiment: ExperimentInfo
    snapshot: SnapshotResult | None
    snapshot_id: int | None
    history: list[HistoryPoint]
    epochs: list[Epoch]
    decisions: list[DecisionEntry]  # oldest first
    daily_units: list[tuple[str, str, int]]  # (day ISO, variant, units first exposed that day)
    generated_at: datetime


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    title: str
    reason: str


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: not applicable / no data
    summary: str
    details: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ResultRow:
    metric: str
    role: str
    kind: str
    direction: str | None
    variant: str
    control_value: float | None
    variant_value: float | None
    control_units: int
    variant_units: int
    absolute_effect: float | None
    relative_effect: float | None
    ci_lower: float | None
    ci_upper: float | None
    ci_scale: str
    p_value: float | None
    p_value_adjusted: float | None
    p_value_non_inferiority: float | None
    status: str
    message: str
    outcome: Literal["better", "worse", "neutral", "not_enough_data"]
    non_inferior: bool | None
    margin: str | None


@dataclass(frozen=True)
class EffectSeries:
    """Cumulative effect of one treatment on one metric over the snapshot history."""

    metric: str
    role: str
    variant: str
    scale: str  # relative | absolute
    direction: str | None
    points: list[tuple[datetime, float, float, float]]  # (cutoff, effect, lower, upper)


@dataclass(frozen=True)
class Report:
    experiment: ExperimentInfo
    generated_at: datetime
    snapshot_id: int | None
    cutoff: datetime | None
    verdict: Verdict
    checks: list[Check]
    results: list[ResultRow]
    effects: list[EffectSeries]
    epochs: list[Epoch]
    decisions: list[DecisionEntry]
    daily_units: list[tuple[str, str, int]]
    drift_flagged: list[dict[str, Any]]
    snapshot: SnapshotResult | None
    inference: dict[str, Any]


def build_report(inputs: ReportInputs) -> Report:
    snap = inputs.snapshot
    results = _results(snap) if snap else []
    return Report(
        experiment=inputs.experiment,
        generated_at=inputs.generated_at,
        snapshot_id=inputs.snapshot_id,
        cutoff=snap.cutoff if snap else None,
        verdict=verdict(inputs, results),
        checks=_checks(snap, inputs.generated_at, inputs.experiment.status) if snap else [],
        results=results,
        effects=_effects(inputs.history),
        epochs=inputs.epochs,
        decisions=inputs.decisions,
        daily_units=inputs.daily_units,
        drift_flagged=[d.model_dump() for d in snap.drift if d.flagged] if snap else [],
        snapshot=snap,
        inference=_inference(snap, inputs.experiment.policy),
    )


# --- verdict --------------------------------------------------------------------------------------


def verdict(inputs: ReportInputs, results: list[ResultRow]) -> Verdict:
    """The banner: a title and one plain sentence, from the same snapshot as the table."""
    exp, snap = inputs.experiment, inputs.snapshot
    last = inputs.decisions[-1] if inputs.decisions else None
    ended = f" {_how(last)} at {words.clock(last.created_at)}" if last else ""
    if exp.status == "concluded" and exp.winner:
        gains = words.verdict_gains(exp.winner, results)
        limits = words.verdict_limits(exp.winner, results)
        sentence = "; ".join(p for p in (gains, limits) if p) or f"{exp.winner} was chosen"
        return Verdict("ship", f"Ship {exp.winner}", f"{sentence}; promoted{ended}.")
    if exp.status == "rolled_back":
        candidates = list(dict.fromkeys(r.variant for r in results))
        lost = "; ".join(loss for v in candidates if (loss := words.verdict_losses(v, results)))
        gains = "; ".join(g for v in candidates if (g := words.verdict_gains(v, results)))
        sentence = lost or (last.reason if last else "the control got all traffic")
        if gains and lost:
            sentence = f"{sentence}, although {gains}"
        return Verdict("rolled_back", "Rolled back", f"{sentence}; rolled back{ended}.")
    if exp.status == "draft":
        return Verdict(
            "draft", "Not started", "The experiment is a draft; start it to collect data."
        )
    if snap is None:
        return Verdict("keep_running", "Keep running", "No analysis yet: waiting for events.")
    if snap.srm is not None and snap.srm.flagged:
        return Verdict(
            "invalid",
            "Invalid (SRM)",
            f"Sample ratio mismatch ({words.p_clause(snap.srm.p_value)}): the observed split "
            "does not match the weights, so the comparison cannot be trusted. Find the cause "
            "before deciding.",
        )
    if exp.status == "paused":
        return Verdict("paused", "Paused", (last.reason if last else "paused") + ".")
    if last is not None and last.action == "hold":
        return Verdict("inconclusive", "Inconclusive", last.reason + ".")
    return Verdict("keep_running", "Keep running", _still_needed(inputs, results))


def _how(decision: DecisionEntry) -> str:
    return "automatically" if decision.actor == "policy" else f"by {decision.actor}"


def _still_needed(inputs: ReportInputs, results: list[ResultRow]) -> str:
    """'Keep running' with the units (and time at the current rate) still needed to detect the
    policy's minimum detectable effect on the primary metric with 80% power (fixed-horizon
    sample size; an always-valid test needs somewhat more). Works for every metric kind: a
    proportion from its rate, every other kind from the per-unit standard deviation implied by
    the control's standard error (``sd = std_error * sqrt(units)``)."""
    snap = inputs.snapshot
    assert snap is not None
    why = snap.reason or "No decision yet"
    why = why if why.endswith((".", "!", "?")) else why + "."
    policy = inputs.experiment.policy
    mde = policy.mde_amount
    primary = next((r for r in results if r.role == "primary"), None)
    if primary is None or not mde.relative or primary.control_value in (None, 0.0):
        return why
    metric = next((m for m in snap.metrics if m.metric == primary.metric), None)
    control = metric.variants.get(inputs.experiment.control) if metric else None
    if control is None or control.value is None or control.units < 2:
        return why
    try:
        if primary.kind == "proportion" and 0 < control.value < 1:
            need = required_units_per_arm(control.value, mde.value, alpha=policy.alpha)
        elif control.std_error is not None and control.std_error > 0:
            sd = control.std_error * math.sqrt(control.units)
            need = required_units_per_arm(
                control.value, mde.value, alpha=policy.alpha, kind="mean", sd=sd
            )
        else:
            return why
    except (ValueError, ZeroDivisionError):
        return why
    have = min(primary.control_units, primary.variant_units)
    more = max(need - have, 0)
    change = words.share(mde.value * 100)
    if more == 0:
        return f"{why} The sample for a {change} effect is reached ({have:,} units per variant)."
    text = (
        f"{why} About {more:,} more units per variant to detect a {change} change in "
        f"{primary.metric} ({need:,} in all, fixed-horizon estimate)"
    )
    if snap.runtime_seconds > 0 and have > 0:
        rate = have / snap.runtime_seconds
        text += f", about {words.duration(more / rate)} at the current rate"
    return text + "."


# --- health checks ----------------------------------------------------------------------------------


def _checks(snap: SnapshotResult, now: datetime, status: str) -> list[Check]:
    checks: list[Check] = []
    if snap.srm is None:
        checks.append(Check("Sample ratio", None, "not checked yet (too few units)"))
    else:
        srm = snap.srm
        details = [
            f"{v}: observed {srm.observed.get(v, 0):,}, expected {srm.expected.get(v, 0.0):,.1f}"
            for v in srm.expected
        ]
        checks.append(
            Check(
                "Sample ratio",
                not srm.flagged,
                ("MISMATCH" if srm.flagged else "ok")
                + f": {words.p_clause(srm.p_value)} (flagged below {srm.threshold:g}; {srm.method})",
                details,
            )
        )
    share = snap.mixed_exposure_share
    checks.append(
        Check(
            "Mixed exposure",
            share < MIXED_EXPOSURE_LIMIT,
            f"{snap.mixed_exposure_units:,} units ({share:.2%}) were seen in more than one "
            "variant; each is counted in its first",
        )
    )
    flagged = [d for d in snap.drift if d.flagged]
    checks.append(
        Check(
            "Drift",
            None if not snap.drift else not flagged,
            "no drift checks yet"
            if not snap.drift
            else (
                f"{len(flagged)} of {len(snap.drift)} checks flagged"
                if flagged
                else f"none of {len(snap.drift)} checks flagged"
            ),
            [f"{d.variant} {d.target}: PSI {words.value(d.psi)} ({d.level})" for d in flagged],
        )
    )
    if snap.last_event_at is None:
        checks.append(Check("Data freshness", None, "no events yet"))
    else:
        age = (now - snap.last_event_at).total_seconds()
        checks.append(
            Check(
                "Data freshness",
                age < FRESHNESS_LIMIT_SECONDS if status == "running" else None,
                f"last event {words.when(snap.last_event_at)} ({words.duration(age)} "
                "before this report)",
            )
        )
    guardrails = [m for m in snap.metrics if m.role == "guardrail"]
    bad: list[str] = []
    unproven: list[str] = []
    for metric in guardrails:
        for c in metric.comparisons:
            if c.worse:
                bad.append(f"{metric.metric} worse in {c.variant}")
            elif not c.non_inferior:
                unproven.append(f"{metric.metric} in {c.variant}")
    if not guardrails:
        checks.append(Check("Guardrails", None, "no guardrail metrics"))
    else:
        checks.append(
            Check(
                "Guardrails",
                not bad,
                "BREACH: " + "; ".join(bad)
                if bad
                else (
                    "all non-inferior"
                    if not unproven
                    else "no breach; not yet proven non-inferior: " + ", ".join(unproven)
                ),
            )
        )
    checks.append(
        Check(
            "Minimum sample",
            snap.gates.all_met,
            "gates met"
            if snap.gates.all_met
            else "below the policy's gates: "
            + ", ".join(
                name
                for name, met in (
                    ("units", snap.gates.min_units_met),
                    ("events", snap.gates.min_events_met),
                    ("runtime", snap.gates.min_runtime_met),
                )
                if not met
            ),
        )
    )
    adjusted = [
        words.adjustment_note(m.metric, c)
        for m in snap.metrics
        for c in m.comparisons
        if c.adjustment is not None
    ]
    if adjusted:
        checks.append(Check("Covariate adjustment", None, "; ".join(adjusted)))
    breakdowns = [words.segment_summary(m.metric, b) for m in snap.metrics for b in m.segments]
    if breakdowns:
        checks.append(Check("Segments", None, "; ".join(breakdowns)))
    windowed = [m for m in snap.metrics if m.window is not None]
    if windowed:
        checks.append(
            Check(
                "Attribution windows",
                None,
                "; ".join(
                    words.window_pending(m.metric, m.window or "", m.pending_units)
                    for m in windowed
                ),
            )
        )
    if snap.progress:
        reached = all(
            p.planned_units_per_variant is not None
            and p.units_per_variant >= p.planned_units_per_variant
            for p in snap.progress
        )
        checks.append(
            Check(
                "Planned sample",
                True if reached else None,
                "; ".join(
                    words.plan_progress(
                        p.metric,
                        p.units_per_variant,
                        p.planned_units_per_variant,
                        snap.runtime_seconds,
                    )
                    for p in snap.progress
                ),
            )
        )
    return checks


# --- results -------------------------------------------------------------------------------------------


def _results(snap: SnapshotResult) -> list[ResultRow]:
    rows: list[ResultRow] = []
    order = {"primary": 0, "guardrail": 1, "secondary": 2}
    control = _control_of(snap)
    for metric in sorted(snap.metrics, key=lambda m: order.get(m.role, 3)):
        base = metric.variants.get(control) if control else None
        for c in metric.comparisons:
            value = metric.variants.get(c.variant)
            outcome: Literal["better", "worse", "neutral", "not_enough_data"]
            if c.status != "ok":
                outcome = "not_enough_data"
            elif c.better:
                outcome = "better"
            elif c.worse:
                outcome = "worse"
            else:
                outcome = "neutral"
            rows.append(
                ResultRow(
                    metric=metric.metric,
                    role=metric.role,
                    kind=metric.kind,
                    direction=metric.direction,
                    variant=c.variant,
                    control_value=base.value if base else None,
                    variant_value=value.value if value else None,
                    control_units=base.units if base else 0,
                    variant_units=value.units if value else 0,
                    absolute_effect=c.absolute_effect,
                    relative_effect=c.relative_effect,
                    ci_lower=c.ci_lower,
                    ci_upper=c.ci_upper,
                    ci_scale=c.ci_scale,
                    p_value=c.p_value,
                    p_value_adjusted=c.p_value_adjusted,
                    p_value_non_inferiority=c.p_value_non_inferiority,
                    status=c.status,
                    message=c.message,
                    outcome=outcome,
                    non_inferior=c.non_inferior,
                    margin=str(c.margin) if c.margin is not None else None,
                )
            )
    return rows


def _control_of(snap: SnapshotResult) -> str | None:
    """The variant no comparison is made for (the control)."""
    for metric in snap.metrics:
        treated = {c.variant for c in metric.comparisons}
        rest = [v for v in metric.variants if v not in treated]
        if rest:
            return rest[0]
    return None


def _effects(history: list[HistoryPoint]) -> list[EffectSeries]:
    series: dict[tuple[str, str], EffectSeries] = {}
    for point in sorted(history, key=lambda p: p.cutoff):
        for metric in point.result.metrics:
            if metric.role not in ("primary", "guardrail"):
                continue
            for c in metric.comparisons:
                effect = c.relative_effect if c.ci_scale == "relative" else c.absolute_effect
                if (
                    c.status != "ok"
                    or effect is None
                    or c.ci_lower is None
                    or c.ci_upper is None
                    or not all(math.isfinite(x) for x in (effect, c.ci_lower, c.ci_upper))
                ):
                    continue
                key = (metric.metric, c.variant)
                if key not in series:
                    series[key] = EffectSeries(
                        metric.metric, metric.role, c.variant, c.ci_scale, metric.direction, []
                    )
                series[key].points.append((point.cutoff, effect, c.ci_lower, c.ci_upper))
    order = {"primary": 0, "guardrail": 1}
    return sorted(series.values(), key=lambda s: order.get(s.role, 2))  # stable within a role


def _inference(snap: SnapshotResult | None, policy: Policy) -> dict[str, Any]:
    info: dict[str, Any] = {
        "method": policy.inference,
        "alpha": policy.alpha,
        "mde": str(policy.mde_amount),
        "max_units_per_variant": policy.max_units_per_variant,
        "multiplicity": "Holm across treatments and primary metrics",
    }
    if snap is not None:
        info["method"] = snap.inference
        info["alpha"] = snap.alpha
        info["weight_epoch"] = snap.weight_epoch
        info["runtime_seconds"] = snap.runtime_seconds
    return info
