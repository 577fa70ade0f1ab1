"""Render a ``Report`` three ways: a self-contained ``index.html`` (inline CSS and SVG, nothing
fetched), ``report.md`` and ``report.json``. Pure: no database (an import-linter contract)."""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
from jinja2 import Environment, PackageLoader, select_autoescape

from abstats.engine import words
from abstats.reports import charts
from abstats.reports.model import Report, ResultRow

_env = Environment(
    loader=PackageLoader("abstats.reports", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

POOLING_NOTE = (
    "Control and variant values are pooled over the whole run; the effects are estimated within "
    "each weight period and then combined (stratified), so when the split changed during the run "
    "an effect can differ from the difference of the pooled values."
)

VERDICT_ICON = {
    "ship": "✔",
    "rolled_back": "↩",
    "keep_running": "…",
    "inconclusive": "≈",
    "invalid": "⚠",
    "paused": "⏸",
    "draft": "✎",
}


# --- JSON ----------------------------------------------------------------------------------------


def to_json_data(report: Report) -> dict[str, Any]:
    exp = report.experiment
    return {
        "experiment": {
            "key": exp.key,
            "name": exp.name,
            "description": exp.description,
            "status": exp.status,
            "control": exp.control,
            "winner": exp.winner,
            "started_at": exp.started_at,
            "ended_at": exp.ended_at,
        },
        "generated_at": report.generated_at,
        "snapshot_id": report.snapshot_id,
        "cutoff": report.cutoff,
        "verdict": {
            "kind": report.verdict.kind,
            "title": report.verdict.title,
            "reason": report.verdict.reason,
        },
        "checks": [
            {"name": c.name, "ok": c.ok, "summary": c.summary, "details": c.details}
            for c in report.checks
        ],
        "results": [_row_json(r) for r in report.results],
        "effects_over_time": [
            {
                "metric": s.metric,
                "variant": s.variant,
                "scale": s.scale,
                "points": [
                    {"cutoff": t, "effect": e, "ci_lower": lo, "ci_upper": hi}
                    for t, e, lo, hi in s.points
                ],
            }
            for s in report.effects
        ],
        "weight_epochs": [
            {
                "epoch": e.epoch,
                "started_at": e.started_at,
                "ended_at": e.ended_at,
                "weights": e.weights,
            }
            for e in report.epochs
        ],
        "units_per_day": [
            {"day": day, "variant": variant, "units": n} for day, variant, n in report.daily_units
        ],
        "decisions": [
            {
                "id": d.id,
                "created_at": d.created_at,
                "action": d.action,
                "actor": d.actor,
                "reason": d.reason,
                "applied": d.applied,
                "status_before": d.status_before,
                "status_after": d.status_after,
                "weights_before": d.weights_before,
                "weights_after": d.weights_after,
                "snapshot_id": d.snapshot_id,
            }
            for d in report.decisions
        ],
        "setup": {
            "variants": exp.variants,
            "metrics": exp.metrics,
            "policy": exp.policy.model_dump(mode="json"),
            "router": exp.router,
            "inference": report.inference,
        },
        "snapshot": report.snapshot.model_dump(mode="json") if report.snapshot else None,
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _row_json(r: ResultRow) -> dict[str, Any]:
    return {
        "metric": r.metric,
        "role": r.role,
        "kind": r.kind,
        "direction": r.direction,
        "variant": r.variant,
        "control_value": _finite(r.control_value),
        "variant_value": _finite(r.variant_value),
        "control_units": r.control_units,
        "variant_units": r.variant_units,
        "absolute_effect": _finite(r.absolute_effect),
        "relative_effect": _finite(r.relative_effect),
        "ci_lower": _finite(r.ci_lower),
        "ci_upper": _finite(r.ci_upper),
        "ci_scale": r.ci_scale,
        "p_value": _finite(r.p_value),
        "p_value_non_inferiority": _finite(r.p_value_non_inferiority),
        "p_value_adjusted": _finite(r.p_value_adjusted),
        "status": r.status,
        "outcome": r.outcome,
        "non_inferior": r.non_inferior,
        "margin": r.margin,
        "message": r.message,
    }


def to_json(report: Report) -> str:
    return orjson.dumps(
        to_json_data(report), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
    ).decode()


# --- shared wording --------------------------------------------------------------------------------


def effect_text(r: ResultRow) -> str:
    """'+4.1% [+1.2%, +7.0%]' (relative) or '+0.012 [+0.003, +0.021]' (absolute)."""
    if r.status != "ok":
        return r.message or r.status.replace("_", " ")
    return words.effect_parts(
        r.ci_scale, r.relative_effect, r.absolute_effect, r.ci_lower, r.ci_upper
    )


def _level_note(report: Report) -> str:
    snap = report.snapshot
    if snap is None or snap.rollback_tests <= 1:
        return ""
    return words.rollback_budget(snap.alpha, snap.rollback_tests)


def shown_p(r: ResultRow) -> str:
    """The p-value of the test the row's outcome rests on: a guardrail's non-inferiority test
    (against its margin, marked "NI"), else the two-sided test."""
    if r.role == "guardrail" and r.p_value_non_inferiority is not None and r.outcome != "worse":
        return f"{words.p_value(r.p_value_non_inferiority)} (NI)"
    return words.p_value(r.p_value)


def _adjusted_p(r: ResultRow) -> str:
    """The Holm-adjusted p-value, or a dash where nothing was adjusted (a single comparison)."""
    return words.p_value(r.p_value_adjusted) if r.p_value_adjusted is not None else "-"


def outcome_text(r: ResultRow) -> str:
    """Words (and a sign) for the outcome, so colour is never the only signal."""
    if r.outcome == "not_enough_data":
        return "not enough data"
    if r.outcome == "better":
        return "▲ better"
    if r.outcome == "worse":
        return "▼ worse"
    if r.role == "guardrail":
        return "= non-inferior" if r.non_inferior else "= no significant difference"
    return "= no significant difference"


# --- Markdown ----------------------------------------------------------------------------------------


_HTML_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def _md_text(text: object) -> str:
    """Text from names, reasons and metadata in Markdown, on one line: the start of anything a
    Markdown viewer would pass through as HTML (``<tag``, ``</``, ``<!--``) is escaped, so it is
    shown, never rendered; comparisons such as ``p < 0.05`` stay readable."""
    return _HTML_TAG_START.sub("&lt;", str(text)).replace("\r", " ").replace("\n", " ")


def _md_cell(text: object) -> str:
    return _md_text(text).replace("|", "\\|")


def to_markdown(report: Report) -> str:
    exp = report.experiment
    v = report.verdict
    lines = [
        f"# {_md_text(exp.name)} (`{exp.key}`)",
        "",
        f"**{VERDICT_ICON.get(v.kind, '')} {_md_text(v.title)}** — {_md_text(v.reason)}",
        "",
        f"Status `{exp.status}`; data cut-off {words.when(report.cutoff)}; snapshot "
        f"{report.snapshot_id if report.snapshot_id is not None else '-'}; "
        f"generated {words.when(report.generated_at)}.",
        "",
        "## Health checks",
        "",
        "| check | status | detail |",
        "|---|---|---|",
    ]
    for c in report.checks:
        state = "n/a" if c.ok is None else ("ok" if c.ok else "PROBLEM")
        detail = c.summary + ("; " + "; ".join(c.details) if c.details else "")
        lines.append(f"| {_md_cell(c.name)} | {state} | {_md_cell(detail)} |")
    lines += [
        "",
        "## Results",
        "",
        " ".join(
            n for n in (POOLING_NOTE if len(report.epochs) > 1 else "", _level_note(report)) if n
        ),
        "",
        "| metric | role | variant | control | variant value | absolute effect | effect [95% CI] "
        "| p (always-valid) | p (Holm) | outcome |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.results:
        lines.append(
            "| "
            + " | ".join(
                _md_cell(x)
                for x in (
                    r.metric,
                    r.role,
                    r.variant,
                    words.value(r.control_value),
                    words.value(r.variant_value),
                    words.num(r.absolute_effect),
                    effect_text(r),
                    shown_p(r),
                    _adjusted_p(r),
                    outcome_text(r),
                )
            )
            + " |"
        )
    if not report.results:
        lines.append("| (no analysis yet) | | | | | | | | | |")
    lines += ["", "## Decisions", ""]
    if not report.decisions:
        lines.append("No decisions yet.")
    for d in report.decisions:
        applied = "" if d.applied else " (recommended, not applied)"
        lines.append(
            f"- {words.when(d.created_at)} **{d.action}**{applied} by `{_md_text(d.actor)}`: "
            f"{_md_text(d.reason)} "
            f"({words.weights(d.weights_before)} -> {words.weights(d.weights_after)})"
        )
    lines += [
        "",
        "## Setup",
        "",
        "| variant | model version | metadata |",
        "|---|---|---|",
    ]
    for variant in exp.variants:
        role = " (control)" if variant["key"] == exp.control else ""
        retired = " (retired)" if variant.get("retired") else ""
        meta = ", ".join(f"{k}={val}" for k, val in (variant.get("metadata") or {}).items())
        lines.append(
            f"| {_md_cell(variant['key'] + role + retired)} | "
            f"{_md_cell(variant.get('model_version') or '-')} | {_md_cell(meta or '-')} |"
        )
    lines += ["", "Metrics:", ""]
    for m in exp.metrics:
        extra = ", ".join(
            f"{k} {m[k]}" for k in ("direction", "margin", "measure", "statistic") if m.get(k)
        )
        lines.append(
            _md_text(
                f"- `{m['key']}` ({m.get('kind')}, {m.get('role')}"
                + (f", {extra}" if extra else "")
                + ")"
            )
        )
    inf = report.inference
    lines += [
        "",
        f"Inference: {inf.get('method')}, alpha {inf.get('alpha')}, MDE {inf.get('mde')}, "
        f"max units per variant {inf.get('max_units_per_variant') or 'unbounded'}; "
        f"{inf.get('multiplicity')}.",
        "",
        "Policy:",
        "",
        "```json",
        orjson.dumps(
            exp.policy.model_dump(mode="json"), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        ).decode(),
        "```",
        "",
    ]
    return "\n".join(lines)


# --- HTML ----------------------------------------------------------------------------------------------


def to_html(report: Report) -> str:
    exp = report.experiment
    variants = [v["key"] for v in exp.variants]
    colour_of = {key: charts.variant_colour(i) for i, key in enumerate(variants)}
    # one axis per metric, shared by its variants' interval bars (a metric's effects are on one
    # scale, relative or absolute; metrics are not comparable with each other)
    reach: dict[str, float] = {}
    for metric in dict.fromkeys(r.metric for r in report.results):
        ok = [r for r in report.results if r.metric == metric and r.status == "ok"]
        bounds = [x for r in ok for x in (r.ci_lower, r.ci_upper) if x is not None]
        relative = all(r.ci_scale == "relative" for r in ok)
        reach[metric] = charts.axis_reach(bounds, relative)
    rows = []
    for r in report.results:
        colour = charts.NEUTRAL
        if r.outcome == "better":
            colour = charts.GOOD
        elif r.outcome == "worse":
            colour = charts.BAD
        estimate = r.relative_effect if r.ci_scale == "relative" else r.absolute_effect
        rows.append(
            {
                "row": r,
                "control": words.value(r.control_value),
                "value": words.value(r.variant_value),
                "effect": effect_text(r),
                "absolute": words.num(r.absolute_effect),
                "p": shown_p(r),
                "p_adj": _adjusted_p(r),
                "outcome": outcome_text(r),
                "bar": charts.interval_bar(
                    r.ci_lower,
                    r.ci_upper,
                    estimate,
                    scale=reach[r.metric],
                    colour=colour,
                    relative=r.ci_scale == "relative",
                )
                if r.status == "ok"
                else "",
            }
        )
    metrics = [
        {
            "metric": m,
            "rows": [item for item, r in zip(rows, report.results, strict=True) if r.metric == m],
        }
        for m in dict.fromkeys(r.metric for r in report.results)
    ]
    effect_charts = [
        {
            "title": f"{s.metric} ({s.role}): {s.variant} vs {exp.control}",
            "svg": charts.effect_over_time(
                s.points,
                title=f"Cumulative {s.scale} effect of {s.variant} on {s.metric}",
                relative=s.scale == "relative",
                good_direction=s.direction,
            ),
        }
        for s in report.effects
    ]
    end = report.cutoff or report.generated_at
    epoch_spans = [
        (e.started_at, e.ended_at or max(end, e.started_at), e.weights) for e in report.epochs
    ]
    markers = [(d.created_at, f"{d.action}: {d.reason}") for d in report.decisions if d.applied]
    drift_charts = [
        {
            "title": f"Drift: {d['target']} in {d['variant']} (PSI {words.value(d['psi'])}, "
            f"{d['level']})",
            "svg": charts.drift_histogram(
                d["bin_labels"],
                d["reference_counts"],
                d["current_counts"],
                title=f"Drift of {d['target']} in {d['variant']}",
                colour=colour_of.get(d["variant"], charts.PALETTE[1]),
            ),
            "colour": colour_of.get(d["variant"], charts.PALETTE[1]),
            "reference_colour": charts.REFERENCE,
            "reference": d["reference"],
        }
        for d in report.drift_flagged
    ]
    template = _env.get_template("report.html.j2")
    return template.render(
        report=report,
        pooling_note=" ".join(
            n for n in (POOLING_NOTE if len(report.epochs) > 1 else "", _level_note(report)) if n
        ),
        exp=exp,
        verdict=report.verdict,
        icon=VERDICT_ICON.get(report.verdict.kind, ""),
        rows=rows,
        metrics=metrics,
        effect_charts=[c for c in effect_charts if c["svg"]],
        traffic_chart=charts.traffic_share(epoch_spans, variants, markers),
        daily_chart=charts.daily_bars(report.daily_units, variants),
        bucket_name=charts.bucket_of(report.daily_units)[1],
        drift_charts=[c for c in drift_charts if c["svg"]],
        colour_of=colour_of,
        when=words.when,
        weights=words.weights,
        duration=words.duration,
        policy_json=orjson.dumps(
            exp.policy.model_dump(mode="json"), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        ).decode(),
        router_json=orjson.dumps(exp.router, option=orjson.OPT_SORT_KEYS).decode(),
    )
