"""Gather a report's inputs from the database, and write reports to ``ABSTATS_REPORTS_DIR``.

Reads: the experiment, its latest snapshot, an evenly spaced sample of at most
``HISTORY_POINTS`` snapshots (for the effect-over-time charts; sampled in SQL, so a long-running
experiment analysed every minute costs the same), the weight epochs, the decisions, and units
first exposed per day from the analysis rollup (``analysis_unit``, one row per unit, never the raw
events).

Writes ``<dir>/<experiment>/index.html``, ``report.md`` and ``report.json`` atomically: each file
is written to a temporary file in the same directory, flushed to disk and renamed over the old
one, so a reader sees the old or the new file, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from abstats.analysis.service import latest_snapshot
from abstats.config import get_settings
from abstats.db.models import Decision, Experiment
from abstats.engine.snapshot import SnapshotResult
from abstats.experiments import repository
from abstats.experiments.state import experiment_spec
from abstats.experiments.targets import redact_router
from abstats.reports import charts
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

HISTORY_POINTS = 200
FILES = {"html": "index.html", "md": "report.md", "json": "report.json"}


def load_inputs(session: Session, key: str, *, now: datetime | None = None) -> ReportInputs:
    experiment = repository.get_experiment(session, key)
    snapshot_row = latest_snapshot(session, experiment.id)
    snapshot = (
        SnapshotResult.model_validate(snapshot_row.result) if snapshot_row is not None else None
    )
    history = _history(session, experiment.id)
    epochs = [
        Epoch(
            e.epoch,
            e.started_at,
            e.ended_at,
            {k: float(v) for k, v in e.weights.items()},
        )
        for e in repository.weight_history(session, experiment.id)
    ]
    decisions = [
        decision_entry(d)
        for d in session.scalars(
            select(Decision).where(Decision.experiment_id == experiment.id).order_by(Decision.id)
        )
    ]
    daily = new_units(session, experiment.id)
    return ReportInputs(
        experiment=experiment_info(experiment),
        snapshot=snapshot,
        snapshot_id=snapshot_row.id if snapshot_row is not None else None,
        history=history,
        epochs=epochs,
        decisions=decisions,
        daily_units=daily,
        generated_at=now or datetime.now(UTC),
    )


def new_units(session: Session, experiment_id: int) -> list[tuple[str, str, int]]:
    """Units first exposed per time bucket and variant, from the analysis rollup: buckets that fit
    the run's length (``charts.time_bucket``: 5 seconds for a 40-second run, days for weeks),
    every bucket from the first to the last present (zero when none came). Bucket starts are
    ISO dates for day buckets and ISO times (UTC) for shorter ones."""
    first, last = session.execute(
        text("SELECT min(first_ts), max(first_ts) FROM analysis_unit WHERE experiment_id = :e"),
        {"e": experiment_id},
    ).one()
    if first is None:
        return []
    seconds, _ = charts.time_bucket((last - first).total_seconds())
    if seconds == 86400:  # calendar days, as before
        seconds_expr = "floor(extract(epoch FROM date_trunc('day', u.first_ts AT TIME ZONE 'UTC')))"
    else:
        seconds_expr = "floor(extract(epoch FROM u.first_ts) / :b) * :b"
    rows = session.execute(
        text(
            f"SELECT {seconds_expr} AS t, v.key, count(*) FROM analysis_unit u "
            "JOIN variant v ON v.id = u.variant_id WHERE u.experiment_id = :e "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        {"e": experiment_id, "b": seconds},
    ).all()
    counts = {(int(t), str(variant)): int(n) for t, variant, n in rows}
    variants = sorted({variant for _, variant in counts})
    starts = [t for t, _ in counts]
    step = 86400 if seconds == 86400 else seconds
    out = []
    for t in range(min(starts), max(starts) + 1, step):
        moment = datetime.fromtimestamp(t, tz=UTC)
        label = (
            moment.strftime("%Y-%m-%d")
            if seconds >= 86400
            else moment.strftime("%Y-%m-%dT%H:%M:%S")
        )
        out += [(label, variant, counts.get((t, variant), 0)) for variant in variants]
    return out


def decision_entry(d: Decision) -> DecisionEntry:
    """A decision row as the report (and the console's timeline) shows it."""
    return DecisionEntry(
        id=d.id,
        created_at=d.created_at,
        action=d.action,
        actor=d.actor,
        reason=d.reason,
        applied=d.applied,
        status_before=d.status_before,
        status_after=d.status_after,
        weights_before=d.weights_before,
        weights_after=d.weights_after,
        snapshot_id=d.snapshot_id,
    )


def experiment_info(experiment: Experiment) -> ExperimentInfo:
    return ExperimentInfo(
        key=experiment.key,
        name=experiment.name,
        description=experiment.description,
        status=experiment.status,
        control=experiment.control_variant,
        winner=experiment.winner_variant,
        variants=[
            {
                "key": v.key,
                "model_version": v.model_version,
                "metadata": v.metadata_,
                "retired": v.retired,
            }
            for v in sorted(experiment.variants, key=lambda v: v.position)
        ],
        metrics=list(experiment.metrics),
        policy=experiment_spec(experiment).policy,
        router=redact_router(dict(experiment.router or {})),
        started_at=experiment.started_at,
        ended_at=experiment.ended_at,
    )


def _history(session: Session, experiment_id: int) -> list[HistoryPoint]:
    rows = session.execute(
        text(
            """
            WITH ranked AS (
                SELECT id, row_number() OVER (ORDER BY cutoff) AS rn, count(*) OVER () AS n
                FROM analysis_snapshot WHERE experiment_id = :e
            )
            SELECT s.cutoff, s.result FROM ranked r JOIN analysis_snapshot s ON s.id = r.id
            WHERE (r.rn - 1) % greatest(ceil(r.n / CAST(:points AS numeric))::int, 1) = 0
               OR r.rn = r.n
            ORDER BY s.cutoff
            """
        ),
        {"e": experiment_id, "points": HISTORY_POINTS},
    )
    return [HistoryPoint(cutoff, SnapshotResult.model_validate(result)) for cutoff, result in rows]


def build(session: Session, key: str) -> Report:
    return build_report(load_inputs(session, key))


def render(report: Report, fmt: str) -> str:
    if fmt == "html":
        return to_html(report)
    if fmt == "md":
        return to_markdown(report)
    if fmt == "json":
        return to_json(report)
    raise ValueError(f"unknown report format {fmt!r}: use html, md or json")


REPORT_FILE_MODE = 0o640  # owner and group (e.g. the web server's): reports are not public
REPORT_DIR_MODE = 0o750


def write_atomically(path: Path, content: str) -> None:
    path.parent.mkdir(mode=REPORT_DIR_MODE, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, REPORT_FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report_files(
    report: Report, directory: Path, formats: tuple[str, ...] = ("html", "md", "json")
) -> Path:
    """Write the formats into ``directory/<experiment>/``; returns the HTML (or first) path."""
    target = directory / report.experiment.key
    written: list[Path] = []
    for fmt in formats:
        path = target / FILES[fmt]
        write_atomically(path, render(report, fmt))
        written.append(path)
    return written[0]


def write_reports(session: Session, key: str, directory: Path | None = None) -> Path:
    """Build ``key``'s report and write all three formats (the scheduler's pipeline calls this
    after every analysis); returns the path of ``index.html``."""
    return write_report_files(build(session, key), directory or Path(get_settings().reports_dir))
