"""One voice: the same snapshot rendered through a decision reason, the Markdown and the HTML
report reads the same numbers the same way, because every one of them comes from
abstats.engine.words. And the report's "units still needed" works for every primary kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape

import numpy as np
import pytest

from abstats.engine import words
from abstats.engine.rules import ExperimentState, decide
from abstats.engine.specs import ExperimentSpec
from abstats.engine.summarize import Aggregates, EpochWeights, MetricData, summarize
from abstats.reports.model import DecisionEntry, ExperimentInfo, ReportInputs, build_report
from abstats.reports.render import to_html, to_markdown
from abstats.stats import (
    BinnedScores,
    ClusteredHistogram,
    ConfusionStats,
    MeanStats,
    ProportionStats,
    RatioStats,
    log_spaced_bin_edges,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
rng = np.random.default_rng(12)


def _state() -> ExperimentState:
    return ExperimentState(
        status="running",
        control="v1",
        variants=("v1", "v2"),
        weights={"v1": 50.0, "v2": 50.0},
        weight_epoch=1,
        epoch_started_at=T0,
    )


def _stats(kind: str, n: int, shift: float) -> tuple[object, dict[str, object]]:
    """Sufficient statistics of one arm for a metric kind, and the metric spec."""
    if kind == "proportion":
        spec = {"kind": "proportion", "outcome": "c", "direction": "increase"}
        return ProportionStats(n=n, successes=int(n * 0.2 * (1 + shift))), spec
    if kind == "mean":
        spec = {"kind": "mean", "outcome": "r", "direction": "increase"}
        return MeanStats.from_values(rng.normal(10 * (1 + shift), 3, n)), spec
    if kind == "ratio":
        spec = {"kind": "ratio", "numerator": "a", "denominator": "b", "direction": "increase"}
        den = rng.integers(1, 5, n).astype(float)
        num = rng.binomial(den.astype(int), 0.3 * (1 + shift)).astype(float)
        return RatioStats.from_values(num, den), spec
    if kind == "f1":
        spec = {"kind": "classification", "measure": "f1", "label": "y"}
        tp = rng.binomial(3, 0.5 + shift / 4, n)
        confusion = ConfusionStats.from_unit_counts(
            tp, 3 - tp, rng.binomial(3, 0.5, n), rng.binomial(1, 0.3, n)
        )
        return confusion.ratio_stats("f1"), spec
    if kind == "auc":
        spec = {"kind": "classification", "measure": "auc", "label": "y"}
        pos = rng.integers(5, 50, 10) + np.arange(10) * int(10 * (1 + shift))
        neg = rng.integers(5, 50, 10)[::-1] * 3
        return BinnedScores(
            positives=tuple(int(x) for x in pos), negatives=tuple(int(x) for x in neg)
        ), spec
    if kind == "p95":
        spec = {"kind": "latency", "statistic": "p95"}
        values = rng.lognormal(3 + shift, 0.4, (n, 3))
        return ClusteredHistogram.from_unit_values(values, log_spaced_bin_edges()), spec
    spec = {"kind": "error_rate"}
    calls = rng.integers(1, 4, n).astype(float)
    errors = rng.binomial(calls.astype(int), 0.02).astype(float)
    return RatioStats.from_values(errors, calls, is_proportion=True), spec


def _look(kind: str, n: int = 800, shift: float = 0.02) -> tuple[ExperimentSpec, Aggregates]:
    control, spec = _stats(kind, n, 0.0)
    treatment, _ = _stats(kind, n, shift)
    metric = {"key": "m", "role": "primary", **spec}
    experiment = ExperimentSpec.parse(
        key="e",
        control="v1",
        variants=["v1", "v2"],
        metrics=[metric],
        policy={
            "min_units_per_variant": 100,
            "min_events_per_variant": 0,
            "min_runtime": 0,
            "ramp": None,
            "mde": "5%",
        },
    )
    data = Aggregates(
        cutoff=T0 + timedelta(hours=5),
        epochs=[EpochWeights(1, T0, {"v1": 50.0, "v2": 50.0})],
        units={"v1": n, "v2": n},
        units_by_epoch={"1": {"v1": n, "v2": n}},
        mixed_units=0,
        first_seen=T0,
        metrics={"m": MetricData({"v1": {1: control}, "v2": {1: treatment}}, {"v1": n, "v2": n})},  # type: ignore[dict-item]
    )
    return experiment, data


def _report(spec: ExperimentSpec, data: Aggregates, status: str, reason: str | None) -> object:
    snapshot = summarize(spec, data, _state())
    info = ExperimentInfo(
        key="e",
        name="E",
        description="",
        status=status,
        control="v1",
        winner="v2" if status == "concluded" else None,
        variants=[
            {"key": "v1", "model_version": "1", "metadata": {}, "retired": False},
            {"key": "v2", "model_version": "2", "metadata": {}, "retired": False},
        ],
        metrics=[m.model_dump(mode="json") for m in spec.metrics],
        policy=spec.policy,
        router={"backend": "builtin"},
        started_at=T0,
        ended_at=None,
    )
    decisions = []
    if reason is not None:
        decisions = [
            DecisionEntry(
                1,
                data.cutoff,
                "promote",
                "policy",
                reason,
                True,
                "running",
                status,
                {"v1": 50.0, "v2": 50.0},
                {"v1": 0.0, "v2": 100.0},
                1,
            )
        ]
    return build_report(
        ReportInputs(
            experiment=info,
            snapshot=snapshot,
            snapshot_id=1,
            history=[],
            epochs=[],
            decisions=decisions,
            daily_units=[],
            generated_at=data.cutoff + timedelta(minutes=1),
        )
    )


def test_a_decision_the_markdown_and_the_html_read_the_same_numbers() -> None:
    spec, data = _look("proportion", n=20_000, shift=0.15)
    snapshot = summarize(spec, data, _state())
    action = decide(snapshot, spec.policy, _state(), now=data.cutoff)
    assert action.kind == "promote", action.reason
    report = _report(spec, data, "concluded", action.reason)
    markdown, html = to_markdown(report), to_html(report)  # type: ignore[arg-type]
    c = snapshot.metrics[0].comparisons[0]
    effect, p = words.effect(c), words.p_value(c.p_value)
    for text in (effect, words.p_clause(c.p_value)):
        assert text in action.reason, (text, action.reason)
    for text in (effect, p, words.weights({"v1": 0.0, "v2": 100.0})):
        assert text in markdown, text
        assert escape(text) in html, text
    # the verdict is a sentence from the same snapshot as the table, with the same effect text
    assert f"v2 improves m by {effect}" in markdown
    assert escape(f"v2 improves m by {effect}") in html


@pytest.mark.parametrize("kind", ["proportion", "mean", "ratio", "f1", "auc", "p95", "error_rate"])
def test_units_still_needed_for_every_primary_kind(kind: str) -> None:
    spec, data = _look(kind, n=400, shift=0.0)
    snapshot = summarize(spec, data, _state())
    value = snapshot.metrics[0].variants["v1"]
    assert value.value is not None and value.std_error is not None and value.std_error > 0
    assert value.ci_lower is not None and value.ci_upper is not None
    assert value.ci_lower < value.value < value.ci_upper
    report = _report(spec, data, "running", None)
    reason = report.verdict.reason  # type: ignore[attr-defined]
    assert "more units per variant to detect a 5% change in m" in reason, reason


def test_p_values_and_durations_read_one_way() -> None:
    assert [words.p_value(p) for p in (3e-7, 0.00032, 0.0431, 0.5123, None)] == [
        "< 0.0001",
        "0.00032",
        "0.0431",
        "0.512",
        "n/a",
    ]
    assert words.p_clause(1e-9) == "p < 0.0001" and words.p_clause(0.2) == "p=0.2"
    assert [words.duration(s) for s in (42, 750, 3 * 3600, 3 * 86400)] == [
        "42 s",
        "12.5 min",
        "3.0 h",
        "3.0 days",
    ]
    assert words.pct(0.0412) == "+4.1%" and words.num(-0.00123) == "-0.00123"
    assert words.weights({"a": 1, "b": 3}) == "a 25%, b 75%"
