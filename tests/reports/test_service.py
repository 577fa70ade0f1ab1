"""Reports from a real database: the pipeline writes all three files after an analysis, their
numbers are the snapshot's, REST serves them with auth, the CLI writes and prints them, files are
replaced atomically, and headless Chromium renders the HTML to a non-trivial PNG."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from abstats.analysis.service import run_analysis
from abstats.cli import app
from abstats.config import get_settings
from abstats.reports import service
from abstats.reports.screenshot import find_chromium, sample_report, screenshot
from abstats.scheduler.pipeline import run_pipeline
from tests.analysis.conftest import T0, Events, make_experiment, minutes, write_events

METRICS = [
    {"key": "errors", "kind": "error_rate", "role": "guardrail", "margin": 0.05},
    {"key": "latency", "kind": "latency", "statistic": "p95", "role": "secondary"},
    {"key": "ctr", "kind": "proportion", "outcome": "click", "role": "primary",
     "direction": "increase"},
]  # fmt: skip


def _events(n: int) -> Events:
    ev = Events()
    for i in range(n):
        variant = ("control", "treatment")[i % 2]
        ev.exposures.append({"variant": variant, "unit_id": f"u{i}", "ts": T0 + minutes(i)})
        ev.predictions.append(
            {
                "variant": variant,
                "unit_id": f"u{i}",
                "request_id": f"r{i}",
                "ts": T0 + minutes(i),
                "error": i % 17 == 0,
                "latency_ms": 20.0 + (i * 7) % 13,
            }
        )
        if i % 3 == 0 or (variant == "treatment" and i % 5 == 0):
            ev.outcomes.append(
                {"unit_id": f"u{i}", "name": "click", "value": 1.0, "ts": T0 + minutes(i + 1)}
            )
    return ev


@pytest.fixture
def analysed(db_session: Session) -> Iterator[str]:
    experiment = make_experiment(db_session, metrics=METRICS, key="rep-exp")
    write_events(db_session, experiment, _events(400))
    run_analysis(db_session, experiment.key, wait_seconds=1)
    yield experiment.key


def test_files_carry_the_snapshots_numbers(
    db_session: Session, analysed: str, tmp_path: Path
) -> None:
    html_path = service.write_reports(db_session, analysed, tmp_path)
    assert html_path == tmp_path / analysed / "index.html"
    assert sorted(p.name for p in (tmp_path / analysed).iterdir()) == [
        "index.html",
        "report.json",
        "report.md",
    ]
    from abstats.analysis.service import latest_snapshot
    from abstats.experiments import repository

    experiment = repository.get_experiment(db_session, analysed)
    snapshot = latest_snapshot(db_session, experiment.id)
    assert snapshot is not None
    data = json.loads((tmp_path / analysed / "report.json").read_text())
    assert data["snapshot_id"] == snapshot.id
    assert data["snapshot"]["metrics"] == json.loads(json.dumps(snapshot.result["metrics"]))
    rows = {(r["metric"], r["variant"]): r for r in data["results"]}
    markdown = (tmp_path / analysed / "report.md").read_text()
    html = html_path.read_text()
    for metric in snapshot.result["metrics"]:
        for comparison in metric["comparisons"]:
            row = rows[(metric["metric"], comparison["variant"])]
            assert row["p_value"] == comparison["p_value"]
            assert row["ci_lower"] == comparison["ci_lower"]
            assert row["control_value"] == metric["variants"]["control"]["value"]
    assert [r["metric"] for r in data["results"]] == ["ctr", "errors", "latency"]  # primary first
    # charts too: primary, then guardrail (the secondary latency gets none)
    assert [s["metric"] for s in data["effects_over_time"]] == ["ctr", "errors"]
    assert html.count("(first analysis)</text>") == 2  # one analysis: a dot and its interval
    assert "| ctr | primary | treatment |" in markdown
    assert re.search(r'class="chart" data-points="[1-9]', html)
    assert "://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_pipeline_writes_the_report_after_each_analysis(committed_engine: Engine) -> None:
    with Session(committed_engine) as session:
        experiment = make_experiment(session, metrics=METRICS, key="rep-pipe")
        write_events(session, experiment, _events(120))
        session.commit()
    result = run_pipeline("rep-pipe", wait_seconds=1)
    assert result.report == Path(get_settings().reports_dir) / "rep-pipe" / "index.html"
    first = json.loads(result.report.with_name("report.json").read_text())
    assert first["snapshot_id"] == result.snapshot.id
    with Session(committed_engine) as session:
        experiment = session.merge(experiment)
        more = _events(240)
        more.exposures, more.predictions, more.outcomes = (
            [dict(e, unit_id=e["unit_id"] + "b", ts=e["ts"] + minutes(500)) for e in x]
            for x in (more.exposures, more.predictions, more.outcomes)
        )
        write_events(session, experiment, more)
        session.commit()
    second = run_pipeline("rep-pipe", wait_seconds=1)
    assert second.created
    data = json.loads(second.report.with_name("report.json").read_text())  # type: ignore[union-attr]
    assert data["snapshot_id"] == second.snapshot.id != first["snapshot_id"]
    assert len(data["effects_over_time"][0]["points"]) == 2  # both analyses in the history


def test_rest_serves_json_html_and_markdown_with_read_scope(
    client: TestClient,
    analysed: str,
    read_headers: dict[str, str],
    ingest_headers: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    base = f"/v1/experiments/{analysed}/report"
    as_json = client.get(base, headers=read_headers)
    assert as_json.status_code == 200
    assert as_json.json()["verdict"]["kind"] in ("keep_running", "inconclusive")
    html = client.get(base + ".html", headers=read_headers)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert '<h2 id="results-title">Results</h2>' in html.text
    md = client.get(base + ".md", headers=read_headers)
    assert md.headers["content-type"].startswith("text/markdown")
    assert md.text.startswith("# test (`rep-exp`)")
    for path in (base, base + ".html", base + ".md"):
        assert client.get(path).status_code == 401
        wrong = client.get(path, headers=ingest_headers)
        assert wrong.status_code == 403 and "needs 'read'" in wrong.json()["detail"]
        assert client.get(path, headers=admin_headers).status_code == 200
    missing = client.get("/v1/experiments/nope/report.html", headers=read_headers)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_cli_prints_and_writes(committed_engine: Engine, tmp_path: Path) -> None:
    with Session(committed_engine) as session:
        experiment = make_experiment(session, metrics=METRICS, key="rep-cli")
        write_events(session, experiment, _events(100))
        run_analysis(session, experiment.key, wait_seconds=1)
        session.commit()
    runner = CliRunner()
    printed = runner.invoke(app, ["report", "rep-cli", "--format", "md", "--out", "-"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.startswith("# test (`rep-cli`)") and "## Results" in printed.stdout
    written = runner.invoke(app, ["report", "rep-cli", "--out", str(tmp_path)])
    assert written.exit_code == 0, written.output
    assert [Path(p).name for p in written.stdout.split()] == [
        "index.html",
        "report.md",
        "report.json",
    ]
    unknown = runner.invoke(app, ["report", "no-such"])
    assert unknown.exit_code == 2 and "no-such" in unknown.output
    bad = runner.invoke(app, ["report", "rep-cli", "--format", "pdf"])
    assert bad.exit_code == 2 and "use html, md or json" in bad.output


def test_a_failed_write_leaves_the_old_file_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "exp" / "index.html"
    service.write_atomically(target, "old")

    def broken(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        service.write_atomically(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["index.html"]


@pytest.mark.skipif(
    find_chromium() is None, reason="Chromium is not installed (.ci/system-packages installs it)"
)
def test_chromium_renders_the_report_to_a_real_picture(tmp_path: Path) -> None:
    from PIL import Image

    from abstats.reports.render import to_html

    html = tmp_path / "index.html"
    html.write_text(to_html(sample_report(datetime(2026, 11, 20, tzinfo=UTC))), encoding="utf-8")
    png = screenshot(html, tmp_path / "shot.png", width=1280, height=1400)
    with Image.open(png) as image:
        assert image.size == (1280, 1400)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 200  # text, charts, anti-aliasing
        small = rgb.resize((128, 140)).getcolors(maxcolors=1 << 20) or []
        ink = sum(n for n, (r, g, b) in small if r + g + b < 600) / (128 * 140)
        assert ink > 0.02  # a page of content (text, two charts), not a blank one
        # the verdict banner's green border is on the page
        assert any(
            abs(r - 0x1A) < 30 and abs(g - 0x7F) < 30 and abs(b - 0x37) < 30
            for _, (r, g, b) in colours
        )


@pytest.mark.skipif(
    find_chromium() is None, reason="Chromium is not installed (.ci/system-packages installs it)"
)
def test_make_report_screenshot_renders_the_sample_and_prints_the_png(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "ABSTATS_REPORTS_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "abstats.reports.screenshot", "--height", "900"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    png = Path(done.stdout.strip())
    assert png == (tmp_path / "sample" / "screenshot-1280.png").resolve()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert {p.name for p in png.parent.iterdir()} >= {"index.html", "report.md", "report.json"}
    missing = subprocess.run(
        [*command, str(tmp_path / "nope.html")], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "nope.html is not a file" in missing.stderr
