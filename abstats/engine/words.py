"""Every number and sentence a person reads: decision reasons, recommendation reasons, report
verdicts and tables, chart labels, CLI lines.

One module, so the same p-value, duration or effect reads the same way in a decision, the API,
the Markdown and the HTML report (``tests/engine/test_words.py`` renders one snapshot through all
of them and compares the strings). Pure: no I/O.

Conventions:
- effects: relative as a signed percentage with one decimal (``+4.1%``), absolute as a signed
  number with 3 significant digits (``+0.0123``); an interval follows in brackets;
- p-values: ``< 0.0001`` below 0.0001 (more digits mean nothing under the model's assumptions),
  else 2 significant digits below 0.01 (``0.0032``) and 3 above (``0.0431``, ``0.512``);
- durations: ``42 s``, ``12.5 min``, ``3.2 h``, ``2.1 days``;
- times: UTC, ``2026-11-22 10:00:03 UTC``; counts with thousands separators.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from abstats.engine.plan import Plan, PlanRequest
    from abstats.engine.snapshot import (
        Comparison,
        DriftCheck,
        MetricResult,
        SegmentBreakdown,
        SrmResult,
    )

MISSING = "n/a"


# --- numbers ----------------------------------------------------------------------------------


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def pct(x: float | None) -> str:
    """A relative effect: ``+4.1%``; beyond +-1000% (a control near 0) the digits mean nothing."""
    if x is None or math.isnan(x):
        return MISSING
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    if abs(x) > 10:
        return ">+1000%" if x > 0 else "<-1000%"
    if x == 0:
        return "0.0%"
    return f"{x * 100:+.1f}%"


def num(x: float | None) -> str:
    """A signed absolute effect with 3 significant digits: ``+0.0123``; zero is ``0``."""
    if x is None or math.isnan(x):
        return MISSING
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    return f"{x:+.3g}"


def value(x: float | None) -> str:
    """A metric's value (unsigned): 4 significant digits, scientific beyond 1e5 or below 1e-3."""
    if not _finite(x):
        return MISSING
    assert x is not None
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3g}"
    return f"{x:.4g}"


def p_value(p: float | None) -> str:
    """``< 0.0001``, ``0.0032``, ``0.0431``, ``0.512``."""
    if not _finite(p):
        return MISSING
    assert p is not None
    if p < 1e-4:
        return "< 0.0001"
    if p < 0.01:
        return f"{p:.2g}"
    return f"{p:.3g}"


def p_clause(p: float | None) -> str:
    """``p < 0.0001`` or ``p=0.0431`` for a sentence."""
    text = p_value(p)
    return f"p {text}" if text.startswith("<") else f"p={text}"


def share(x: float) -> str:
    """A share in percent, as weights read: ``25%``, ``12.5%``."""
    return f"{x:.0f}%" if abs(x - round(x)) < 0.05 else f"{x:.1f}%"


def weights(w: Mapping[str, float] | None) -> str:
    """``v1 95%, v2 5%`` (weights normalised to shares)."""
    if not w:
        return "-"
    total = sum(w.values()) or 1.0
    return ", ".join(f"{k} {share(100.0 * v / total)}" for k, v in w.items())


def counts(values: Mapping[str, float], digits: int = 0) -> str:
    """``v1 5,012, v2 4,988`` (a mapping in its own order)."""
    return ", ".join(f"{k} {v:,.{digits}f}" for k, v in values.items())


def duration(seconds: float) -> str:
    """``42 s``, ``12.5 min``, ``3.2 h``, ``2.1 days``."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def when(moment: datetime | None) -> str:
    """``2026-11-22 10:00:03 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"


def clock(moment: datetime) -> str:
    """``10:00:03 UTC`` (a time of day in a sentence)."""
    return moment.astimezone(UTC).strftime("%H:%M UTC")


def tick(x: float, percent: bool) -> str:
    """A chart axis label: ``+5%``, ``-0.5%``, ``0.012``, ``1,250``."""
    if x == 0:
        return "0%" if percent else "0"
    if percent:
        return f"{x * 100:+.0f}%" if abs(x) >= 0.1 else f"{x * 100:+.1f}%"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


# --- effects ----------------------------------------------------------------------------------


def effect_parts(
    scale: str, relative: float | None, absolute: float | None, lo: float | None, hi: float | None
) -> str:
    """``+4.1% [+1.2%, +7.0%]`` (relative) or ``+0.012 [+0.003, +0.021]`` (absolute)."""
    fmt = pct if scale == "relative" else num
    estimate = relative if scale == "relative" else absolute
    if estimate is None:
        return "effect n/a"
    text = fmt(estimate)
    if lo is not None and hi is not None:
        text += f" [{fmt(lo)}, {fmt(hi)}]"
    return text


def effect(c: Comparison) -> str:
    """A comparison's effect and interval on its own scale."""
    return effect_parts(c.ci_scale, c.relative_effect, c.absolute_effect, c.ci_lower, c.ci_upper)


INFERENCE_LABEL = {
    "always_valid": "always-valid",
    "group_sequential": "group-sequential",
    "fixed": "fixed-horizon",
}


def inference(method: str) -> str:
    return INFERENCE_LABEL.get(method, method)


# --- sentences of the rule table -----------------------------------------------------------------


def primary_clause(metric: MetricResult, c: Comparison, alpha: float, *, adjusted: bool) -> str:
    """``v2 f1 +14.2% [+11.8%, +16.7%], always-valid p < 0.0001 < 0.05 after Holm``."""
    p = c.decision_p_value
    relation = "<" if p is not None and p < alpha else ">="
    after = " after Holm" if adjusted else ""
    return (
        f"{c.variant} {metric.metric} {effect(c)}, "
        f"{inference(c.inference)} {p_clause(p)} {relation} {alpha:g}{after}"
    )


def guardrail_clause(metric: MetricResult, c: Comparison) -> str:
    margin = f" (margin {c.margin})" if c.margin is not None else ""
    if c.worse:
        return f"{metric.metric} worse in {c.variant}: {effect(c)}{margin}"
    if c.non_inferior:
        return f"{metric.metric} non-inferior{margin}"
    return f"{metric.metric} not yet shown non-inferior in {c.variant}: {effect(c)}{margin}"


def srm_clause(srm: SrmResult) -> str:
    return (
        f"invalid: SRM ({p_clause(srm.p_value)} < {srm.threshold:g}; observed "
        f"{counts(srm.observed)}, expected {counts(srm.expected, 1)})"
    )


def drift_names(flagged: Iterable[DriftCheck]) -> str:
    return ", ".join(
        f"{d.variant} {d.target} (PSI {d.psi:.3g})"
        if d.psi is not None
        else f"{d.variant} {d.target}"
        for d in flagged
    )


def rollback_budget(alpha: float, tests: int) -> str:
    """The note under a results table whose guardrail intervals are at the rollback level."""
    level = 100 * (1 - alpha / tests)
    return (
        f"Guardrail intervals are {level:.4g}% intervals: the {tests} tests that can roll the "
        f"experiment back share one error budget (alpha {alpha:g}, {alpha / tests:.3g} each)."
    )


def ramp_step(current: float, following: float) -> str:
    return f"{current:g}% -> {following:g}%"


# --- the report's verdict --------------------------------------------------------------------------


class Row(Protocol):
    """One result row (metric x treatment) of a report, as the verdict sentences read it."""

    @property
    def metric(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def variant(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def ci_scale(self) -> str: ...
    @property
    def relative_effect(self) -> float | None: ...
    @property
    def absolute_effect(self) -> float | None: ...
    @property
    def ci_lower(self) -> float | None: ...
    @property
    def ci_upper(self) -> float | None: ...
    @property
    def non_inferior(self) -> bool | None: ...


def _row_effect(r: Row) -> str:
    return effect_parts(r.ci_scale, r.relative_effect, r.absolute_effect, r.ci_lower, r.ci_upper)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def verdict_gains(variant: str, rows: Iterable[Row]) -> str:
    """``v2 improves f1 by +15.2% [+12.8%, +17.5%]`` (primary metrics found better)."""
    better = [
        r for r in rows if r.variant == variant and r.role == "primary" and r.outcome == "better"
    ]
    if not better:
        return ""
    return f"{variant} improves " + _and([f"{r.metric} by {_row_effect(r)}" for r in better])


def verdict_limits(variant: str, rows: Iterable[Row]) -> str:
    """``latency_p95 and error_rate within limits`` (guardrails proven non-inferior)."""
    guards = [r for r in rows if r.variant == variant and r.role == "guardrail"]
    if not guards:
        return ""
    within = [r.metric for r in guards if r.non_inferior]
    others = [r.metric for r in guards if not r.non_inferior]
    parts = []
    if within:
        parts.append(f"{_and(within)} within {'its' if len(within) == 1 else 'their'} limits")
    if others:
        parts.append(f"{_and(others)} not yet shown within limits")
    return "; ".join(parts)


def verdict_losses(variant: str, rows: Iterable[Row]) -> str:
    """``latency_p95 worse in v2 by +67.1% [+48.4%, +88.2%]`` (guardrails or primaries worse)."""
    worse = [
        r
        for r in rows
        if r.variant == variant and r.role in ("guardrail", "primary") and r.outcome == "worse"
    ]
    return "; ".join(f"{r.metric} worse in {variant} by {_row_effect(r)}" for r in worse)


# --- planning --------------------------------------------------------------------------------------


def days(x: float) -> str:
    """Days to a decision: ``0.4 days``, ``3.2 days``, ``41 days``."""
    return f"{x:.1f} days" if x < 10 else f"{x:,.0f} days"


def plan_summary(request: PlanRequest, plan: Plan) -> str:
    """``1,234 units per variant (always-valid, 80% power for a +5% change at alpha 0.05): about
    3.2 days at 10,000 units/day under the ramp 5% -> 25% -> 50% (1.2x a fixed-horizon test).``"""
    mde = request.mde_amount
    change = f"{mde.value * 100:+g}%" if mde.relative else num(mde.value)
    split = (
        "the ramp " + " -> ".join(share(s) for s in request.ramp.steps)
        if request.ramp is not None
        else f"a {share(request.split if request.split is not None else 50.0)} candidate share"
    )
    text = (
        f"{plan.units_per_variant:,} units per variant ({inference(plan.inference)}, "
        f"{share(plan.power * 100)} power for a {change} change at alpha "
        f"{plan.alpha_per_comparison:.3g}): about {days(plan.days_to_decision)} at "
        f"{request.traffic_per_day:,.0f} units/day under {split}"
    )
    if plan.inference != "fixed":
        text += f" at the latest ({plan.sequential_inflation:.2f}x a fixed-horizon test)"
    return text + "."


def plan_progress(metric: str, have: int, planned: int | None, seconds: float) -> str:
    """``conversion: 4,012 of 12,500 units per variant (32%), about 2.1 days more at the current
    rate``."""
    if planned is None:
        return f"{metric}: no plan yet (the control's value cannot support one)"
    done = min(have / planned, 1.0) if planned else 1.0
    text = f"{metric}: {have:,} of {planned:,} units per variant ({done:.0%})"
    if have >= planned:
        return text + ", planned sample reached"
    if seconds > 0 and have > 0:
        text += f", about {duration((planned - have) * seconds / have)} more at the current rate"
    return text


def plan_step(candidate_share: float, days_held: float, control: int, per_candidate: int) -> str:
    """``candidate share 5%: 1.0 days, control 9,500 units, each candidate 500``."""
    return (
        f"candidate share {share(candidate_share)}: {days(days_held)}, control {control:,} "
        f"units, each candidate {per_candidate:,}"
    )


def window_pending(metric: str, window: str, pending: Mapping[str, int]) -> str:
    """``conversion (window 7d): 1,234 units wait for their window to close (v1 800, v2 434)``."""
    waiting = sum(pending.values())
    if not waiting:
        return f"{metric} (window {window}): every unit's window has closed"
    return (
        f"{metric} (window {window}): {waiting:,} units wait for their window to close "
        f"({counts(pending)})"
    )


def adjustment_note(metric: str, c: Comparison) -> str:
    """``revenue in v2: adjusted +2.1% [+0.5%, +3.7%], raw +2.4% [-0.3%, +5.1%] (pre_exposure,
    theta 0.69, variance -48%)``."""
    a = c.adjustment
    if a is None:
        return f"{metric} in {c.variant}: not adjusted"
    raw = effect_parts(
        c.ci_scale, a.raw_relative_effect, a.raw_absolute_effect, a.raw_ci_lower, a.raw_ci_upper
    )
    return (
        f"{metric} in {c.variant}: adjusted {effect(c)}, raw {raw} ({a.covariate}, theta "
        f"{a.theta:.3g}, variance -{a.variance_reduction:.0%})"
    )


def segment_summary(metric: str, b: SegmentBreakdown) -> str:
    """``conversion by country in v2: 4 segments; significant after BH: de +0.0123 [+0.004,
    +0.021]; heterogeneity Q=3.1 (df 3), p=0.38``."""
    shown = len(b.segments)
    more = f" (+{b.left_out} smaller left out)" if b.left_out else ""
    found = [
        f"{s.segment or '(none)'} {effect_parts('absolute', None, s.absolute_effect, s.ci_lower, s.ci_upper)}"
        for s in b.segments
        if s.significant
    ]
    text = f"{metric} by {b.feature} in {b.variant}: {shown} segments{more}; "
    text += "significant after BH: " + ", ".join(found) if found else "none significant after BH"
    if b.heterogeneity_q is not None:
        text += (
            f"; heterogeneity Q={b.heterogeneity_q:.3g} (df {b.heterogeneity_df}), "
            f"{p_clause(b.heterogeneity_p_value)}"
        )
    return text
