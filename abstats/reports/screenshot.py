"""Render a report's ``index.html`` to a PNG with headless Chromium, for people to look at.

    python -m abstats.reports.screenshot [HTML] [--out PNG] [--width 1280] [--height 2400]

Without ``HTML`` it takes the newest ``index.html`` under ``ABSTATS_REPORTS_DIR`` (``make demo``
writes one), or else renders a built-in sample report (two variants, a ramp and a promotion, all
numbers made up and labelled so) to ``<reports>/sample/index.html`` first. ``make
report-screenshot`` runs this.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from abstats.analysis.snapshot import (
    Comparison,
    Gates,
    MetricResult,
    SnapshotResult,
    SrmResult,
    VariantValue,
)
from abstats.reports.model import (
    DecisionEntry,
    Epoch,
    ExperimentInfo,
    HistoryPoint,
    Report,
    ReportInputs,
    build_report,
)
from abstats.reports.render import to_html, to_json, to_markdown

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html: Path, png: Path, *, width: int = 1280, height: int = 2400) -> Path:
    """``index.html`` -> PNG with headless Chromium (a fresh profile, no network needed)."""
    browser = find_chromium()
    if browser is None:
        raise SystemExit("Chromium is not installed (Debian: apt-get install chromium).")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="abstats-chromium-") as profile:
        subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png.resolve()}",
                html.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    if not png.exists() or png.stat().st_size == 0:
        raise SystemExit(f"Chromium wrote no screenshot to {png}")
    return png


def sample_report(now: datetime | None = None) -> Report:
    """A made-up but realistic report: v2 ramped 5 -> 25 -> 50% and promoted on F1."""
    now = now or datetime.now(UTC)
    start = now - timedelta(days=6)
    epochs = [
        Epoch(0, start, start + timedelta(days=1), {"v1": 95.0, "v2": 5.0}),
        Epoch(1, start + timedelta(days=1), start + timedelta(days=2), {"v1": 75.0, "v2": 25.0}),
        Epoch(2, start + timedelta(days=2), start + timedelta(days=5), {"v1": 50.0, "v2": 50.0}),
        Epoch(3, start + timedelta(days=5), None, {"v1": 0.0, "v2": 100.0}),
    ]

    def snapshot(day: float) -> SnapshotResult:
        n = int(1500 + 5200 * day)
        width = 0.55 / (day + 0.4) ** 0.5  # the interval narrows as data accumulate
        f1 = MetricResult(
            metric="f1",
            kind="classification",
            role="primary",
            direction="increase",
            variants={
                "v1": VariantValue(units=n, events=3 * n, value=0.83, ci_lower=0.82, ci_upper=0.84),
                "v2": VariantValue(
                    units=int(n * 0.6), events=2 * n, value=0.95, ci_lower=0.94, ci_upper=0.96
                ),
            },
            comparisons=[
                Comparison(
                    variant="v2",
                    absolute_effect=0.12,
                    relative_effect=0.145,
                    ci_lower=0.145 - width * 0.25,
                    ci_upper=0.145 + width * 0.25,
                    p_value=min(1.0, 0.4 / (1 + day**3)),
                    p_value_adjusted=min(1.0, 0.4 / (1 + day**3)),
                    significant=day > 2,
                    better=day > 2,
                    worse=False,
                )
            ],
        )
        latency = MetricResult(
            metric="latency_p95",
            kind="latency",
            role="guardrail",
            direction="decrease",
            variants={
                "v1": VariantValue(units=n, events=3 * n, value=35.5),
                "v2": VariantValue(units=int(n * 0.6), events=2 * n, value=34.4),
            },
            comparisons=[
                Comparison(
                    variant="v2",
                    absolute_effect=-1.1,
                    relative_effect=-0.031,
                    ci_lower=-0.031 - width * 0.3,
                    ci_upper=-0.031 + width * 0.3,
                    p_value=0.41,
                    p_value_adjusted=0.41,
                    non_inferior=day > 1,
                    margin="10%",
                    worse=False,
                )
            ],
        )
        auc = MetricResult(
            metric="auc",
            kind="classification",
            role="secondary",
            direction="increase",
            variants={
                "v1": VariantValue(units=n, events=3 * n, value=0.906),
                "v2": VariantValue(units=int(n * 0.6), events=2 * n, value=0.99),
            },
            comparisons=[
                Comparison(
                    variant="v2",
                    absolute_effect=0.084,
                    relative_effect=0.093,
                    ci_lower=0.08,
                    ci_upper=0.106,
                    p_value=1e-12,
                    p_value_adjusted=1e-12,
                    significant=True,
                    better=True,
                )
            ],
        )
        return SnapshotResult(
            experiment="churn-sample",
            cutoff=start + timedelta(days=day),
            weight_epoch=min(int(day), 3),
            weights={"v1": 0.0, "v2": 100.0},
            inference="always_valid",
            alpha=0.05,
            units={"v1": n, "v2": int(n * 0.6)},
            mixed_exposure_units=int(n * 0.004),
            mixed_exposure_share=0.004,
            last_event_at=start + timedelta(days=day),
            runtime_seconds=day * 86400,
            gates=Gates(
                min_units_met=True,
                min_events_met=True,
                min_runtime_met=True,
                units_per_variant={"v1": n, "v2": int(n * 0.6)},
                primary_events_per_variant={"v1": 3 * n, "v2": 2 * n},
                runtime_seconds=day * 86400,
            ),
            metrics=[f1, latency, auc],
            srm=SrmResult(
                observed={"v1": n, "v2": int(n * 0.6)},
                expected={"v1": n * 1.002, "v2": n * 0.598},
                p_value=0.62,
                threshold=0.01,
                flagged=False,
                method="sequential",
            ),
            recommendation="promote v2",
            reason="f1 is better in v2",
        )

    history = [HistoryPoint(start + timedelta(hours=6 * i), snapshot(i / 4)) for i in range(1, 21)]
    promote = start + timedelta(days=5)
    decisions = [
        DecisionEntry(1, start, "start", "key:3f2a9c", "launch", True, "draft", "running",
                      {"v1": 50, "v2": 50}, {"v1": 95, "v2": 5}, None),
        DecisionEntry(2, start + timedelta(days=1), "advance_ramp", "policy",
                      "advance ramp 5% -> 25%: latency_p95 non-inferior (margin 10%)", True,
                      "running", "running", {"v1": 95, "v2": 5}, {"v1": 75, "v2": 25}, 4),
        DecisionEntry(3, start + timedelta(days=2), "advance_ramp", "policy",
                      "advance ramp 25% -> 50%: latency_p95 non-inferior (margin 10%)", True,
                      "running", "running", {"v1": 75, "v2": 25}, {"v1": 50, "v2": 50}, 8),
        DecisionEntry(4, promote, "promote", "policy",
                      "promote v2: v2 f1 +14.5% [+12.1%, +16.9%], always-valid p=3.1e-04 < 0.05 "
                      "after Holm; latency_p95 non-inferior (margin 10%)", True, "running",
                      "concluded", {"v1": 50, "v2": 50}, {"v1": 0, "v2": 100}, 20),
    ]  # fmt: skip
    daily = []
    for d in range(6):
        day = (start + timedelta(days=d)).strftime("%Y-%m-%d")
        share = [0.05, 0.25, 0.5, 0.5, 0.5, 1.0][d]
        daily += [(day, "v1", int(5200 * (1 - share))), (day, "v2", int(5200 * share))]
    experiment = ExperimentInfo(
        key="churn-sample",
        name="Churn model v2 (sample report, made-up numbers)",
        description="A sample rendering: the numbers are invented to show every part of a report.",
        status="concluded",
        control="v1",
        winner="v2",
        variants=[
            {"key": "v1", "model_version": "xgb-1.0", "metadata": {"rows": 80}, "retired": True},
            {"key": "v2", "model_version": "xgb-2.0", "metadata": {"rows": 900}, "retired": False},
        ],
        metrics=[
            {
                "key": "f1",
                "kind": "classification",
                "measure": "f1",
                "role": "primary",
                "direction": "increase",
                "label": "churned",
            },
            {
                "key": "latency_p95",
                "kind": "latency",
                "statistic": "p95",
                "role": "guardrail",
                "direction": "decrease",
                "margin": "10%",
            },
            {
                "key": "auc",
                "kind": "classification",
                "measure": "auc",
                "role": "secondary",
                "label": "churned",
            },
        ],
        policy={
            "mode": "auto",
            "inference": "always_valid",
            "alpha": 0.05,
            "mde": "5%",
            "ramp": {"steps": [5, 25, 50, 100], "min_interval": "1d"},
        },
        router={"backend": "builtin"},
        started_at=start,
        ended_at=promote,
    )
    return build_report(
        ReportInputs(
            experiment=experiment,
            snapshot=history[-1].result,
            snapshot_id=20,
            history=history,
            epochs=epochs,
            decisions=decisions,
            daily_units=daily,
            generated_at=now,
        )
    )


def newest_report(directory: Path) -> Path | None:
    found = sorted(directory.glob("*/index.html"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def main(argv: list[str] | None = None) -> int:
    from abstats.config import get_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", nargs="?", type=Path, help="an index.html (default: the newest)")
    parser.add_argument("--out", type=Path, default=None, help="PNG path")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)
    reports = Path(get_settings().reports_dir)
    html = args.html or newest_report(reports)
    if html is None:
        report = sample_report()
        target = reports / "sample"
        target.mkdir(parents=True, exist_ok=True)
        (target / "index.html").write_text(to_html(report), encoding="utf-8")
        (target / "report.md").write_text(to_markdown(report), encoding="utf-8")
        (target / "report.json").write_text(to_json(report), encoding="utf-8")
        html = target / "index.html"
    png = args.out or html.with_name(f"screenshot-{args.width}.png")
    screenshot(html, png, width=args.width, height=args.height)
    print(png.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
