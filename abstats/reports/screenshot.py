"""Render a report's ``index.html`` to a PNG with headless Chromium, for people to look at.

    python -m abstats.reports.screenshot [HTML] [--out PNG] [--width 1280] [--height 3200]

Without ``HTML`` it takes the newest ``index.html`` under ``ABSTATS_REPORTS_DIR`` (``make demo``
writes one), or else renders a built-in sample report (two variants, a ramp and a promotion, all
numbers made up and labelled so) to ``<reports>/sample/index.html`` first, afresh each run. ``make
report-screenshot`` runs this.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from abstats.engine import words
from abstats.engine.snapshot import (
    Comparison,
    DriftCheck,
    Gates,
    MetricResult,
    SnapshotResult,
    SrmResult,
    VariantValue,
)
from abstats.engine.specs import Amount, Policy
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

SAMPLE_DIR = "sample"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html: Path, png: Path, *, width: int = 1280, height: int = 3200) -> Path:
    """``index.html`` -> PNG with headless Chromium (a fresh profile, no network needed)."""
    browser = find_chromium()
    if browser is None:
        raise SystemExit("Chromium is not installed (Debian: apt-get install chromium).")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="abstats-chromium-") as profile:
        done = subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png.resolve()}",
                html.resolve().as_uri(),
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
    if done.returncode != 0 or not png.exists() or png.stat().st_size == 0:
        tail = "\n".join((done.stderr or "").strip().splitlines()[-15:])
        raise RuntimeError(
            f"Chromium ({browser}) exited {done.returncode} and wrote "
            f"{'no' if not png.exists() else 'an empty' if png.stat().st_size == 0 else 'a'} "
            f"screenshot to {png}; its last output:\n{tail}"
        )
    return png


def sample_report(now: datetime | None = None) -> Report:
    """A made-up but realistic report: v2 ramped 5 -> 25 -> 50% and was promoted on F1.

    The numbers hang together as a real run's would: units follow the weight epochs, intervals
    narrow with the square root of the data, an always-valid p-value is below alpha exactly when
    its interval excludes zero, and each decision quotes the snapshot it was taken on."""
    now = now or datetime.now(UTC)
    start = now - timedelta(days=6)
    per_day = 5200  # new units a day
    shares = ((0.0, 1.0, 0.05), (1.0, 2.0, 0.25), (2.0, 5.0, 0.50))  # (from day, to day, v2)
    epochs = [
        Epoch(i, start + timedelta(days=a), start + timedelta(days=b), {"v1": 1 - s, "v2": s})
        for i, (a, b, s) in enumerate(shares)
    ] + [Epoch(3, start + timedelta(days=5), None, {"v1": 0.0, "v2": 1.0})]

    def expected_v2(day: float) -> float:
        return sum(per_day * s * max(0.0, min(day, b) - a) for a, b, s in shares)

    def units(day: float) -> dict[str, int]:
        v2 = round(expected_v2(day) * 0.996)  # chance: a little under its share (SRM p ~ 0.6)
        return {"v1": round(per_day * day) - v2, "v2": v2}

    def compare(effect: float, half: float, *, better_if: str) -> Comparison:
        lo, hi = effect - half, effect + half
        # always-valid p: below alpha (0.05) exactly when the interval excludes zero
        p = min(1.0, 0.05 ** (abs(effect) / half))
        excludes = lo > 0 or hi < 0
        good = (effect > 0) == (better_if == "increase")
        return Comparison(
            variant="v2",
            absolute_effect=None,
            relative_effect=effect,
            ci_lower=lo,
            ci_upper=hi,
            p_value=p,
            p_value_adjusted=p,
            significant=excludes,
            better=excludes and good,
            worse=excludes and not good,
        )

    def metric(key: str, kind: str, role: str, direction: str, base: float, c: Comparison,
               n: dict[str, int]) -> MetricResult:  # fmt: skip
        assert c.relative_effect is not None
        value = base * (1 + c.relative_effect)
        c = c.model_copy(update={"absolute_effect": value - base})
        return MetricResult(
            metric=key,
            kind=kind,
            role=role,
            direction=direction,
            variants={
                "v1": VariantValue(units=n["v1"], events=3 * n["v1"], value=base),
                "v2": VariantValue(units=n["v2"], events=3 * n["v2"], value=value),
            },
            comparisons=[c],
        )

    def snapshot(day: float) -> SnapshotResult:
        n = units(day)
        half = 0.17 / math.sqrt(day + 0.4)  # narrows as data accumulate
        f1 = metric("f1", "classification", "primary", "increase", 0.83,
                    compare(0.142 + 0.06 * math.sin(1.7 * day + 0.6) / (1 + 2 * day), half,
                            better_if="increase"), n)  # fmt: skip
        lat = compare(-0.031 + 0.02 * math.sin(1.3 * day) / (1 + day), 0.78 * half,
                      better_if="decrease")  # fmt: skip
        assert lat.ci_upper is not None
        lat = lat.model_copy(
            update={
                "margin": Amount.parse("10%"),
                "non_inferior": lat.ci_upper < 0.10,
                "p_value_non_inferiority": 0.004 if lat.ci_upper < 0.10 else 0.31,
            }
        )
        latency = metric("latency_p95", "latency", "guardrail", "decrease", 35.5, lat, n)
        auc = metric("auc", "classification", "secondary", "increase", 0.906,
                     compare(0.09 + 0.01 / (1 + day), 0.4 * half, better_if="increase"), n)  # fmt: skip
        total = n["v1"] + n["v2"]
        expected = {"v1": total - expected_v2(day), "v2": expected_v2(day)}
        # the sequential SRM test's p, approximated by Pearson's chi-square (1 df)
        chi2 = sum((n[k] - expected[k]) ** 2 / expected[k] for k in n)
        drift = DriftCheck(
            variant="v2",
            target="score",
            reference="first 5000 predictions of the control",
            psi=0.17,
            js_distance=0.19,
            p_value=2e-9,
            p_value_adjusted=4e-9,
            level="warn",
            flagged=True,
            consecutive_windows=4,
            reference_counts=[820, 1310, 980, 640, 450, 330, 220, 140, 70, 40, 0],
            current_counts=[560, 930, 900, 770, 610, 480, 330, 240, 120, 60, 0],
            bin_labels=[
                "< 0.1",
                *(f"[{i / 10:g}, {(i + 1) / 10:g})" for i in range(1, 9)),
                ">= 0.9",
                "null",
            ],
        )
        return SnapshotResult(
            experiment="churn-sample",
            cutoff=start + timedelta(days=day),
            weight_epoch=min(int(day), 2),
            weights=dict(epochs[min(int(day), 2)].weights),
            inference="always_valid",
            alpha=0.05,
            units=n,
            mixed_exposure_units=int(total * 0.004),
            mixed_exposure_share=int(total * 0.004) / total,
            last_event_at=start + timedelta(days=day, seconds=-40),
            runtime_seconds=day * 86400,
            gates=Gates(
                min_units_met=min(n.values()) >= 200,
                min_events_met=min(n.values()) >= 200,
                min_runtime_met=day >= 1,
                units_per_variant=n,
                primary_events_per_variant={k: 3 * v for k, v in n.items()},
                runtime_seconds=day * 86400,
            ),
            metrics=[f1, latency, auc],
            srm=SrmResult(
                observed=n,
                expected=expected,
                p_value=math.erfc(math.sqrt(chi2 / 2)),
                threshold=0.01,
                flagged=False,
                method="sequential",
            ),
            drift=[drift] if day >= 3 else [],
            recommendation="promote v2" if f1.comparisons[0].better else "keep running",
            reason="f1 is better in v2" if f1.comparisons[0].better else "no decision yet",
        )

    history = [HistoryPoint(start + timedelta(hours=6 * i), snapshot(i / 4)) for i in range(1, 21)]

    def quote(snap: SnapshotResult) -> str:
        f1, lat = snap.metrics[0].comparisons[0], snap.metrics[1].comparisons[0]
        assert f1.relative_effect is not None and f1.ci_lower is not None
        assert f1.ci_upper is not None and lat.ci_upper is not None
        return (
            f"v2 f1 {words.effect(f1)}, always-valid {words.p_clause(f1.p_value)} < 0.05; "
            f"latency_p95 non-inferior (upper bound {words.pct(lat.ci_upper)} < margin 10%)"
        )

    def guard(snap: SnapshotResult) -> str:
        lat = snap.metrics[1].comparisons[0]
        assert lat.ci_upper is not None
        return f"latency_p95 non-inferior (upper bound {words.pct(lat.ci_upper)} < margin 10%)"

    w = [{k: float(round(100 * v)) for k, v in e.weights.items()} for e in epochs]
    decisions = [
        DecisionEntry(1, start, "start", "key:3f2a9c", "launch", True, "draft", "running",
                      {"v1": 50, "v2": 50}, w[0], None),
        DecisionEntry(2, start + timedelta(days=1), "advance_ramp", "policy",
                      f"advance ramp 5% -> 25%: {guard(history[3].result)}", True,
                      "running", "running", w[0], w[1], 4),
        DecisionEntry(3, start + timedelta(days=2), "advance_ramp", "policy",
                      f"advance ramp 25% -> 50%: {guard(history[7].result)}", True,
                      "running", "running", w[1], w[2], 8),
        DecisionEntry(4, start + timedelta(days=5), "promote", "policy",
                      f"promote v2: {quote(history[-1].result)}", True, "running",
                      "concluded", w[2], w[3], 20),
    ]  # fmt: skip
    daily = []
    for d in range(5):
        day = (start + timedelta(days=d)).strftime("%Y-%m-%d")
        got = {k: units(d + 1)[k] - units(d)[k] for k in ("v1", "v2")}
        daily += [(day, "v1", got["v1"]), (day, "v2", got["v2"])]
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
        policy=Policy.model_validate(
            {
                "mode": "auto",
                "inference": "always_valid",
                "alpha": 0.05,
                "mde": "5%",
                "on_drift": "warn",
                "ramp": {"steps": [5, 25, 50, 100], "min_interval": "1d"},
            }
        ),
        router={"backend": "builtin"},
        started_at=start,
        ended_at=start + timedelta(days=5),
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
    """The newest experiment report under ``directory`` (not the sample, which is re-rendered)."""
    found = sorted(
        (p for p in directory.glob("*/index.html") if p.parent.name != SAMPLE_DIR),
        key=lambda p: p.stat().st_mtime,
    )
    return found[-1] if found else None


def main(argv: list[str] | None = None) -> int:
    from abstats.config import get_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", nargs="?", type=Path, help="an index.html (default: the newest)")
    parser.add_argument("--out", type=Path, default=None, help="PNG path")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=3200)
    args = parser.parse_args(argv)
    if args.html is not None and not args.html.is_file():
        parser.error(f"{args.html} is not a file: give a report's index.html, or none")
    reports = Path(get_settings().reports_dir)
    html = args.html or newest_report(reports)
    if html is None:
        report = sample_report()
        target = reports / SAMPLE_DIR
        target.mkdir(parents=True, exist_ok=True)
        (target / "index.html").write_text(to_html(report), encoding="utf-8")
        (target / "report.md").write_text(to_markdown(report), encoding="utf-8")
        (target / "report.json").write_text(to_json(report), encoding="utf-8")
        html = target / "index.html"
    png = args.out or html.with_name(f"screenshot-{args.width}.png")
    try:
        screenshot(html, png, width=args.width, height=args.height)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(png.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
