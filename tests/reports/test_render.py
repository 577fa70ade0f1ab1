"""The renderers, on the built-in sample report (pure: no database): numbers equal the snapshot's
in every format, the HTML is well-formed and self-contained, every chart has data, and the
Markdown matches its golden file."""

from __future__ import annotations

import math
import os
import re
from datetime import UTC, datetime, timedelta
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from abstats.engine.snapshot import DriftCheck, SrmResult
from abstats.engine.words import p_clause
from abstats.engine.words import p_value as format_p
from abstats.reports.model import ReportInputs, build_report
from abstats.reports.render import effect_text, to_html, to_json_data, to_markdown
from abstats.reports.screenshot import sample_report

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
GOLDEN = Path(__file__).parent / "golden" / "sample.md"
VOID = {"meta", "br", "img", "input", "link", "hr", "col", "area", "base", "source", "wbr"}
SVG_EMPTY = {"line", "polygon", "polyline", "rect", "circle", "path"}


class _Balance(HTMLParser):
    """Strict enough for our own output: every non-void element closed, in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs += [(tag, k, v) for k, v in attrs]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs += [(tag, k, v) for k, v in attrs]

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()


def test_numbers_in_every_format_equal_the_snapshot() -> None:
    report = sample_report(NOW)
    assert report.snapshot is not None
    data = to_json_data(report)
    markdown = to_markdown(report)
    html = to_html(report)
    compared = 0
    for metric in report.snapshot.metrics:
        for c in metric.comparisons:
            row = next(
                r
                for r in data["results"]
                if r["metric"] == metric.metric and r["variant"] == c.variant
            )
            assert row["relative_effect"] == c.relative_effect
            assert (row["ci_lower"], row["ci_upper"]) == (c.ci_lower, c.ci_upper)
            assert row["p_value"] == c.p_value and row["p_value_adjusted"] == c.p_value_adjusted
            assert row["control_value"] == metric.variants["v1"].value
            assert row["variant_value"] == metric.variants[c.variant].value
            model_row = next(
                r for r in report.results if r.metric == metric.metric and r.variant == c.variant
            )
            assert row["absolute_effect"] == c.absolute_effect
            absolute = f"{c.absolute_effect:+.3g}"
            assert f"| {absolute} | {effect_text(model_row)} |" in markdown
            assert f'<td class="num" data-label="Absolute effect">{absolute}</td>' in html
            for text in (effect_text(model_row), format_p(c.p_value)):
                assert text in markdown, text
                assert escape(text) in html, text
            compared += 1
    assert compared == 3
    assert data["snapshot"]["metrics"][0]["comparisons"][0]["p_value"] == (
        report.snapshot.metrics[0].comparisons[0].p_value
    )
    srm = report.snapshot.srm
    assert srm is not None and p_clause(srm.p_value) in markdown


def test_html_is_well_formed_and_self_contained() -> None:
    html = to_html(sample_report(NOW))
    parser = _Balance()
    parser.feed(html)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    external = [
        (tag, key, value)
        for tag, key, value in parser.attrs
        if key in ("src", "href", "srcset", "action")
        or (value and "://" in value and key != "xmlns")
    ]
    assert external == []
    assert "@import" not in html and "url(" not in html
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", html)


def test_every_chart_has_data_and_a_description() -> None:
    html = to_html(sample_report(NOW))
    charts = re.findall(r'<svg[^>]*class="chart" data-points="(\d+)"', html)
    # f1 and latency effects, traffic share, units per day, the flagged score drift
    assert len(charts) == 5
    assert all(int(n) > 0 for n in charts)
    assert html.count("<desc>") == 5
    drift = html[html.index("<title>Drift of score in v2</title>") :]
    drift = drift[: drift.index("</svg>")]
    assert drift.count("<rect") == 2 * 11  # reference and current bar for each of 11 bins
    assert "&lt; 0.1</text>" in drift  # bins are labelled on the axis
    for series in ("f1 (primary): v2 vs v1", "latency_p95 (guardrail): v2 vs v1"):
        assert series in html
    polylines = re.findall(r'<polyline points="([^"]+)"', html)
    assert polylines and all(len(p.split()) == 20 for p in polylines)  # one point per analysis
    # interval bars in the results table, one per comparison
    assert html.count('class="ci"') == 3


def test_markdown_matches_golden_file() -> None:
    markdown = to_markdown(sample_report(NOW))
    if os.environ.get("ABSTATS_UPDATE_GOLDEN") == "1":  # after a deliberate change: review the diff
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(markdown, encoding="utf-8")
    assert GOLDEN.exists(), f"{GOLDEN} is missing: run with ABSTATS_UPDATE_GOLDEN=1 to write it"
    assert markdown == GOLDEN.read_text(encoding="utf-8")


def _inputs(**changes: object) -> ReportInputs:
    report = sample_report(NOW)
    base = ReportInputs(
        experiment=report.experiment,
        snapshot=report.snapshot,
        snapshot_id=report.snapshot_id,
        history=[],
        epochs=report.epochs,
        decisions=report.decisions,
        daily_units=report.daily_units,
        generated_at=NOW,
    )
    return ReportInputs(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_verdicts_say_what_to_do() -> None:
    report = sample_report(NOW)
    assert report.verdict.title == "Ship v2"
    # a plain sentence from the same snapshot as the table, not the machine reason
    f1 = next(r for r in report.results if r.metric == "f1")
    assert report.verdict.reason.startswith(f"v2 improves f1 by {effect_text(f1)}")
    assert "promoted automatically at " in report.verdict.reason
    running = report.experiment.__class__(
        **{**report.experiment.__dict__, "status": "running", "winner": None}
    )
    assert report.snapshot is not None
    keep = build_report(_inputs(experiment=running, decisions=report.decisions[:3]))
    assert keep.verdict.kind == "keep_running"
    bad_srm = report.snapshot.model_copy(
        update={
            "srm": SrmResult(
                observed={"v1": 5200, "v2": 4800},
                expected={"v1": 5000.0, "v2": 5000.0},
                p_value=6e-5,
                threshold=0.01,
                flagged=True,
                method="sequential",
            )
        }
    )
    invalid = build_report(_inputs(experiment=running, snapshot=bad_srm))
    assert invalid.verdict.title == "Invalid (SRM)"
    assert "Sample ratio mismatch (p < 0.0001)" in invalid.verdict.reason
    rolled = report.experiment.__class__(
        **{**report.experiment.__dict__, "status": "rolled_back", "winner": None}
    )
    assert build_report(_inputs(experiment=rolled)).verdict.title == "Rolled back"


def test_keep_running_estimates_the_units_still_needed() -> None:
    report = sample_report(NOW)
    assert report.snapshot is not None
    few = report.snapshot.model_copy(update={"recommendation": "keep running", "reason": "gates"})
    proportion = few.metrics[0].model_copy(update={"kind": "proportion"})
    values = {
        k: v.model_copy(update={"value": 0.10, "units": 1000})
        for k, v in proportion.variants.items()
    }
    proportion = proportion.model_copy(update={"variants": values})
    snap = few.model_copy(update={"metrics": [proportion, *few.metrics[1:]]})
    running = report.experiment.__class__(
        **{**report.experiment.__dict__, "status": "running", "winner": None}
    )
    verdict = build_report(_inputs(experiment=running, snapshot=snap, decisions=[])).verdict
    # 10% baseline, 5% relative MDE, alpha 0.05, power 0.8 (Fleiss eq. 4.14), as statsmodels
    from statsmodels.stats.proportion import samplesize_proportions_2indep_onetail

    need = samplesize_proportions_2indep_onetail(
        0.005, 0.10, 0.8, alpha=0.05, alternative="two-sided"
    )
    assert f"{math.ceil(need):,} in all" in verdict.reason
    assert verdict.reason.startswith("gates. About")
    assert "more units per variant" in verdict.reason and "at the current rate" in verdict.reason


def test_flagged_drift_gets_a_histogram() -> None:
    report = sample_report(NOW)
    assert report.snapshot is not None
    drift = DriftCheck(
        variant="v2",
        target="feature:tenure",
        reference="control",
        psi=0.31,
        js_distance=0.2,
        p_value=1e-9,
        p_value_adjusted=1e-8,
        level="alert",
        flagged=True,
        consecutive_windows=3,
        reference_counts=[10, 30, 40, 20],
        current_counts=[30, 30, 25, 15],
        bin_labels=["<3", "3-12", "12-24", ">=24"],
    )
    snap = report.snapshot.model_copy(update={"drift": [drift]})
    html = to_html(build_report(_inputs(snapshot=snap)))
    assert "Drift: feature:tenure in v2 (PSI 0.31, alert)" in html
    assert re.search(r'class="chart" data-points="4"', html)
    checks = {c.name: c for c in build_report(_inputs(snapshot=snap)).checks}
    assert checks["Drift"].ok is False and "1 of 1 checks flagged" in checks["Drift"].summary


def test_json_is_valid_json_with_the_sections_in_order() -> None:
    from abstats.reports.render import to_json

    data = orjson.loads(to_json(sample_report(NOW)))
    assert list(data)[:6] == [
        "experiment",
        "generated_at",
        "snapshot_id",
        "cutoff",
        "verdict",
        "checks",
    ]
    assert data["decisions"][-1]["action"] == "promote"
    assert len(data["effects_over_time"]) == 2


@pytest.mark.parametrize("value,text", [(0.041, "+4.1%"), (-0.5, "-50.0%"), (25.0, ">+1000%")])
def test_percentages_read_well(value: float, text: str) -> None:
    report = sample_report(NOW)
    row = report.results[0].__class__(
        **{
            **report.results[0].__dict__,
            "relative_effect": value,
            "ci_lower": value,
            "ci_upper": value,
        }
    )
    assert effect_text(row) == f"{text} [{text}, {text}]"


def test_traffic_share_shows_the_weights_in_force_and_keeps_labels_inside() -> None:
    from abstats.reports import charts

    start = datetime(2026, 11, 1, tzinfo=UTC)
    day = timedelta(days=1)
    promoted = start + 4 * day
    svg = charts.traffic_share(
        [
            (start, start + day, {"a": 90.0, "b": 10.0}),
            (start + day, promoted, {"a": 50.0, "b": 50.0}),
            (promoted, promoted, {"a": 0.0, "b": 100.0}),  # promoted at the last analysis
        ],
        ["a", "b"],
        [(start, "start: launch"), (start + day, "advance_ramp: x"), (promoted, "promote: b")],
    )
    final = re.search(r'<rect x="[\d.]+" y="[\d.]+" width="([\d.]+)"[^>]*><title>b: 100%', svg)
    assert final is not None and float(final.group(1)) > 20  # a visible strip, not a hairline
    labels = re.findall(r'<text x="([\d.]+)" y="[\d.]+"( text-anchor="end")? class="marker-label">'
                        r"([^<]+)</text>", svg)  # fmt: skip
    assert [name for _, _, name in labels] == ["start", "advance_ramp", "promote"]
    x, anchor, _ = labels[-1]
    assert anchor and float(x) <= 640  # the last label ends at its line, inside the chart


def test_effect_chart_shows_the_latest_interval_whole_and_says_when_early_ones_are_cut() -> None:
    from abstats.reports import charts

    start = datetime(2026, 11, 1, tzinfo=UTC)
    # a near-zero effect: early intervals +-50%, the latest +-5%
    points = [
        (start + timedelta(hours=h), 0.001, 0.001 - w, 0.001 + w)
        for h, w in ((1, 0.5), (2, 0.2), (3, 0.1), (4, 0.05))
    ]
    svg = charts.effect_over_time(points, title="t", relative=True, good_direction="increase")
    polygon = re.search(r'<polygon points="([^"]+)"', svg)
    assert polygon is not None
    ys = [float(xy.split(",")[1]) for xy in polygon.group(1).split()]
    top_edge, bottom_edge = min(ys), max(ys)  # the first, widest interval is cut at both edges
    last_top, last_bottom = ys[3], ys[4]  # band: upper bounds left to right, then lower reversed
    assert top_edge < last_top < last_bottom < bottom_edge
    assert (bottom_edge - top_edge) > 3 * (last_bottom - last_top) * 0.9  # room around it
    assert "cut off at the edge of the chart" in svg


def test_effect_chart_after_one_analysis_draws_a_dot_and_its_interval() -> None:
    from abstats.reports import charts

    moment = datetime(2026, 11, 1, 6, 40, tzinfo=UTC)
    svg = charts.effect_over_time(
        [(moment, 0.40, -0.82, 9.87)], title="t", relative=True, good_direction="increase"
    )
    assert 'data-points="1"' in svg and "<circle" in svg and "<polygon" not in svg
    assert svg.count("(first analysis)</text>") == 1 and "2026-11-01 06:40" in svg
    ticks = re.findall(r'class="tick">([^<]+)</text>', svg)
    assert ticks and all(abs(float(t.rstrip("%"))) <= 1000 for t in ticks if t.endswith("%"))


def test_relative_effect_chart_stays_within_1000_percent() -> None:
    from abstats.reports import charts

    start = datetime(2026, 11, 1, tzinfo=UTC)
    points = [(start + timedelta(hours=h), 0.0, -1.0, 5000.0) for h in range(3)]  # control ~0
    svg = charts.effect_over_time(points, title="t", relative=True, good_direction="decrease")
    ticks = [t for t in re.findall(r'class="tick">([^<]+)</text>', svg) if t.endswith("%")]
    assert ticks and max(abs(float(t.rstrip("%"))) for t in ticks) <= 1000
    assert "cut off at the edge of the chart" in svg
