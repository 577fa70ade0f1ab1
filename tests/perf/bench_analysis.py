"""Benchmark: analysis of one experiment with N predictions (default 10,000,000) and outcomes.

Loads events with COPY into a scratch database (``ABSTATS_BENCH_SCRATCH``, default
``abstats_bench_analysis``, on the server of ``ABSTATS_BENCH_DATABASE_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``; it is dropped first), then
measures in one run:

(a) the limit: one bare ``SELECT variant_id, count(*), sum(x), sum(x*x) ... GROUP BY variant_id``
    over the prediction table (and, for reference, the same over the outcome table);
(a') the one-pass limit: what any analysis that keeps per-unit sums must read and group at
    least once: for each event table one ``GROUP BY unit_id`` pass computing counts and sums
    (outcomes per name and unit), plus one hash join of the predictions with their label
    outcomes on ``request_id``, with the fold's ``work_mem``. Nothing is written;
(b) a full analysis (rollups built from every event, all metrics, SRM, drift) in a fresh
    process, with that process's peak RSS. The previous rollups of the experiment are deleted
    and vacuumed first, in a separate untimed step (printed as "reset"): (b) is the first
    analysis of an experiment, which has nothing to delete;
(c) an incremental re-analysis after adding 1% more events, in a fresh process.

It does (a), (a') and (b) first at N/10 events and then again at N, to show that the RSS does not
grow with the event count. Prints every figure and the ratios (b)/(a), (b)/(a') and (b)/(c);
``--statements`` also prints the slowest SQL statements of (b) and (c) with their times (where
the gap to (a) is).

    python tests/perf/bench_analysis.py [--events N] [--keep] [--statements]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = os.environ.get("ABSTATS_BENCH_SCRATCH", "abstats_bench_analysis")
T0 = datetime(2026, 11, 1, tzinfo=UTC)
REQUESTS_PER_UNIT = 10
CHUNK = 500_000

METRICS = [
    {
        "key": "conversion",
        "kind": "proportion",
        "outcome": "converted",
        "role": "primary",
        "direction": "increase",
    },
    {"key": "revenue", "kind": "mean", "outcome": "revenue", "winsorize": 0.99},
    {"key": "accuracy", "kind": "classification", "measure": "accuracy", "label": "label"},
    {"key": "auc", "kind": "classification", "measure": "auc", "label": "label"},
    {"key": "log_loss", "kind": "classification", "measure": "log_loss", "label": "label"},
    {
        "key": "latency",
        "kind": "latency",
        "statistic": "mean",
        "role": "guardrail",
        "margin": "10%",
    },
    {"key": "latency_p95", "kind": "latency", "statistic": "p95"},
    {"key": "errors", "kind": "error_rate", "role": "guardrail", "margin": 0.005},
]


def server_url() -> str:
    return os.environ.get(
        "ABSTATS_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def scratch_url() -> str:
    return make_url(server_url()).set(database=SCRATCH).render_as_string(hide_password=False)


def create_scratch() -> None:
    admin = create_engine(server_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{SCRATCH}"'))
    admin.dispose()
    os.environ["ABSTATS_DATABASE_URL"] = scratch_url()
    from abstats.db import migrate
    from abstats.db.engine import get_engine

    migrate.upgrade(get_engine())


def drop_scratch() -> None:
    admin = create_engine(server_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)'))
    admin.dispose()


def create_experiment() -> tuple[int, dict[str, int]]:
    from abstats.db.engine import session_scope
    from abstats.db.models import Experiment, Variant, WeightEpoch

    with session_scope() as session:
        experiment = Experiment(
            key="bench",
            name="bench",
            status="running",
            control_variant="v1",
            salt="s",
            metrics=METRICS,
            policy={"min_units_per_variant": 100, "min_runtime": "1h", "mde": "2%"},
            router={"backend": "builtin"},
            started_at=T0,
        )
        experiment.variants = [Variant(key="v1", position=0), Variant(key="v2", position=1)]
        session.add(experiment)
        session.flush()
        session.add(
            WeightEpoch(
                experiment_id=experiment.id, epoch=0, weights={"v1": 50, "v2": 50}, started_at=T0
            )
        )
        session.flush()
        return experiment.id, {v.key: v.id for v in experiment.variants}


def _copy(cur: Any, table: str, columns: list[str], frame: pd.DataFrame) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False, na_rep="")
    buffer.seek(0)
    cur.copy_expert(
        f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '')", buffer
    )


def load(experiment_id: int, variants: dict[str, int], start: int, stop: int, seed: int) -> float:
    """COPY predictions ``start..stop`` (10 per unit), their label outcomes, one exposure per new
    unit, per-unit conversions and revenue. Returns seconds."""
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    conn = psycopg2.connect(scratch_url())
    v1, v2 = variants["v1"], variants["v2"]
    with conn, conn.cursor() as cur:
        for lo in range(start, stop, CHUNK):
            hi = min(lo + CHUNK, stop)
            i = np.arange(lo, hi)
            unit = i // REQUESTS_PER_UNIT
            treat = unit % 2 == 1
            variant = np.where(treat, v2, v1)
            ts = pd.to_datetime(T0) + pd.to_timedelta(i * 10, unit="ms")
            score = rng.uniform(0, 1, i.size)
            latency = rng.lognormal(3, 0.5, i.size) * np.where(treat, 1.02, 1.0)
            error = rng.random(i.size) < 0.01
            x = rng.normal(0, 1, i.size)
            plan = np.array(["gold", "silver", "bronze"])[rng.integers(0, 3, i.size)]
            units = pd.Series(unit).map("u{}".format)
            requests = pd.Series(i).map("r{}".format)
            features = [
                '{"x": %.4f, "plan": "%s"}' % (a, b)  # noqa: UP031 (fast path for 10M rows)
                for a, b in zip(x, plan, strict=True)
            ]
            _copy(
                cur,
                "prediction",
                [
                    "experiment_id",
                    "variant_id",
                    "unit_id",
                    "request_id",
                    "ts",
                    "score",
                    "latency_ms",
                    "error",
                    "features",
                    "message_id",
                ],
                pd.DataFrame(
                    {
                        "e": experiment_id,
                        "v": variant,
                        "u": units,
                        "r": requests,
                        "ts": ts,
                        "s": score,
                        "l": latency,
                        "err": error,
                        "f": features,
                        "m": "p" + requests,
                    }
                ),
            )
            label = (rng.random(i.size) < score).astype(float)
            outcomes = pd.DataFrame(
                {
                    "e": experiment_id,
                    "u": units,
                    "r": requests,
                    "n": "label",
                    "val": label,
                    "ts": ts,
                    "m": "o" + requests,
                }
            )
            first = i % REQUESTS_PER_UNIT == 0
            n_first = int(first.sum())
            convert = first & (rng.random(i.size) < np.where(treat, 0.11, 0.10))
            revenue = first & (rng.random(i.size) < 0.3)
            extra = pd.DataFrame(
                {
                    "e": experiment_id,
                    "u": np.concatenate([units[convert], units[revenue]]),
                    "r": None,
                    "n": ["converted"] * int(convert.sum()) + ["revenue"] * int(revenue.sum()),
                    "val": np.concatenate(
                        [np.ones(int(convert.sum())), rng.exponential(20, int(revenue.sum()))]
                    ),
                    "ts": np.concatenate([ts[convert], ts[revenue]]),
                }
            )
            extra["m"] = "c" + extra["n"] + extra["u"]
            _copy(
                cur,
                "outcome",
                ["experiment_id", "unit_id", "request_id", "name", "value", "ts", "message_id"],
                pd.concat([outcomes, extra]),
            )
            _copy(
                cur,
                "exposure",
                ["experiment_id", "variant_id", "unit_id", "ts", "message_id"],
                pd.DataFrame(
                    {
                        "e": experiment_id,
                        "v": variant[first],
                        "u": units[first],
                        "ts": ts[first],
                        "m": "x" + units[first],
                    }
                ),
            )
            del n_first
    conn.close()
    conn = psycopg2.connect(scratch_url())
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE prediction, outcome, exposure")
    conn.close()
    return time.perf_counter() - began


def bare_scan(table: str) -> float:
    """(a) the physical limit: one GROUP BY over every row of the table, warm cache."""
    column = {"prediction": "latency_ms", "outcome": "value"}[table]
    group = {"prediction": "variant_id", "outcome": "name"}[table]
    sql = (
        f"SELECT {group}, count(*), sum({column}), sum({column} * {column}) FROM {table} "
        f"WHERE experiment_id = 1 GROUP BY {group}"
    )
    conn = psycopg2.connect(scratch_url())
    best = float("inf")
    with conn.cursor() as cur:
        for _ in range(2):
            began = time.perf_counter()
            cur.execute(sql)
            cur.fetchall()
            best = min(best, time.perf_counter() - began)
    conn.close()
    return best


ONE_PASS = (
    "SELECT count(*) FROM (SELECT unit_id, count(*), min(ts), max(ts), min(variant_id), "
    "max(variant_id) FROM exposure WHERE experiment_id = 1 GROUP BY unit_id) s",
    "SELECT count(*) FROM (SELECT unit_id, count(*), min(ts), max(ts), min(variant_id), "
    "max(variant_id), count(*) FILTER (WHERE error), count(latency_ms), sum(latency_ms), "
    "sum(latency_ms * latency_ms) FROM prediction WHERE experiment_id = 1 GROUP BY unit_id) s",
    "SELECT count(*) FROM (SELECT name, unit_id, count(*), sum(value), bool_or(value > 0), "
    "max(ts) FROM outcome WHERE experiment_id = 1 GROUP BY name, unit_id) s",
    "SELECT count(*), sum(p.score * o.value) FROM prediction p JOIN outcome o "
    "ON o.experiment_id = p.experiment_id AND o.request_id = p.request_id "
    "WHERE p.experiment_id = 1 AND o.name = 'label'",
)


def one_pass_limit() -> float:
    """(a') each event table grouped by unit once, plus the prediction-label hash join; warm
    cache, the fold's settings (:data:`abstats.analysis.rollup.FOLD_SETTINGS`)."""
    from abstats.analysis.rollup import FOLD_SETTINGS

    conn = psycopg2.connect(scratch_url())
    best = float("inf")
    with conn.cursor() as cur:
        for setting in FOLD_SETTINGS:
            cur.execute(setting)
        for _ in range(2):
            began = time.perf_counter()
            for sql in ONE_PASS:
                cur.execute(sql)
                cur.fetchall()
            best = min(best, time.perf_counter() - began)
    conn.close()
    return best


RESET = r"""
import json, time
from sqlalchemy import text
from abstats.analysis.rollup import ROLLUP_TABLES, clear_rollups
from abstats.db.engine import get_engine, session_scope
began = time.perf_counter()
with session_scope() as session:
    clear_rollups(session, 1)
    session.execute(text("DELETE FROM drift_state"))
    session.execute(text("DELETE FROM drift_reference"))
    session.execute(text("UPDATE analysis_watermark SET drift_prediction_id = 0, drift_outcome_id = 0"))
with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
    for table in ROLLUP_TABLES:
        conn.execute(text(f"VACUUM {table}"))
print(json.dumps({"seconds": time.perf_counter() - began}))
"""

ANALYSE = r"""
import json, os, sys, time
from sqlalchemy import event
from abstats.analysis.drift import run_drift
from abstats.analysis.service import run_analysis
from abstats.db.engine import get_engine, session_scope
statements = []
if os.environ.get("BENCH_STATEMENTS"):
    @event.listens_for(get_engine(), "before_cursor_execute")
    def _start(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("bench_t", []).append(time.perf_counter())
    @event.listens_for(get_engine(), "after_cursor_execute")
    def _stop(conn, cursor, statement, parameters, context, executemany):
        seconds = time.perf_counter() - conn.info["bench_t"].pop()
        statements.append((round(seconds, 3), " ".join(statement.split())[:110]))
began = time.perf_counter()
with session_scope() as session:
    run = run_analysis(session, "bench", wait_seconds=30)
    analysed = time.perf_counter()
    try:
        checks = run_drift(session, "bench", wait_seconds=30)
    except NotImplementedError:
        checks = None
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) parent
rss = next(int(line.split()[1]) for line in open("/proc/self/status")
           if line.startswith("VmHWM:")) / 1024
print(json.dumps({"seconds": time.perf_counter() - began, "analysis": analysed - began,
                  "drift": time.perf_counter() - analysed, "rss_mb": rss,
                  "rollup": run.timings.get("rollup"), "created": run.created,
                  "units": run.snapshot.result["units"], "drift_checks": None if checks is None else len(checks),
                  "recommendation": run.snapshot.recommendation, "rows": run.rollup.rows_read,
                  "statements": sorted(statements, reverse=True)[:12]}))
"""


def analyse(mode: str, *, statements: bool = False) -> dict[str, Any]:
    """Run ``mode`` ("reset", "full" or "incremental") in a fresh process; its JSON line."""
    env = {**os.environ, "ABSTATS_DATABASE_URL": scratch_url(), "ABSTATS_LOG_LEVEL": "WARNING"}
    if statements:
        env["BENCH_STATEMENTS"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", RESET if mode == "reset" else ANALYSE, mode],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"analysis failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _print_statements(run: dict[str, Any]) -> None:
    for seconds, statement in run.get("statements") or []:
        print(f"    {seconds:7.3f}s  {statement}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="predictions (and labels)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--statements", action="store_true", help="print the slowest SQL statements of (b), (c)"
    )
    args = parser.parse_args()
    n = args.events
    create_scratch()
    try:
        experiment_id, variants = create_experiment()
        assert experiment_id == 1
        rows: list[dict[str, Any]] = []
        loaded = 0
        for size in (n // 10, n):
            seconds = load(experiment_id, variants, loaded, size, seed=size)
            loaded = size
            limit = bare_scan("prediction")
            limit_outcomes = bare_scan("outcome")
            one_pass = one_pass_limit()
            reset = analyse("reset")
            full = analyse("full", statements=args.statements)
            rows.append(
                {
                    "events": size,
                    "load_s": seconds,
                    "limit_s": limit,
                    "limit_outcomes_s": limit_outcomes,
                    "one_pass_s": one_pass,
                    "reset_s": reset["seconds"],
                    "full": full,
                }
            )
            print(
                f"[{size:,} predictions] COPY {seconds:.1f}s | (a) bare GROUP BY over "
                f"prediction {limit:.2f}s (outcome: {limit_outcomes:.2f}s) | (a') one-pass "
                f"limit {one_pass:.2f}s | reset "
                f"{reset['seconds']:.2f}s | (b) full "
                f"analysis {full['seconds']:.2f}s (rollup {full['rollup']:.2f}s, drift "
                f"{full['drift']:.2f}s), peak RSS {full['rss_mb']:.0f} MB | "
                f"(b)/(a) = {full['seconds'] / limit:.2f}x, "
                f"(b)/((a)+(a outcome)) = {full['seconds'] / (limit + limit_outcomes):.2f}x, "
                f"(b)/(a') = {full['seconds'] / one_pass:.2f}x",
                flush=True,
            )
            _print_statements(full)
        extra = max(n // 100, REQUESTS_PER_UNIT)
        load(experiment_id, variants, n, n + extra, seed=n + 1)
        incremental = analyse("incremental", statements=args.statements)
        full = rows[-1]["full"]
        print(
            f"[+{extra:,} predictions (1%)] (c) incremental analysis "
            f"{incremental['seconds']:.2f}s (rollup {incremental['rollup']:.2f}s, drift "
            f"{incremental['drift']:.2f}s), peak RSS {incremental['rss_mb']:.0f} MB | "
            f"(b)/(c) = {full['seconds'] / incremental['seconds']:.1f}x"
        )
        _print_statements(incremental)
        print(
            f"peak RSS of the analysis process: {rows[0]['full']['rss_mb']:.0f} MB at "
            f"{rows[0]['events']:,} vs {rows[1]['full']['rss_mb']:.0f} MB at "
            f"{rows[1]['events']:,} predictions"
        )
        print("targets: (b) <= 2x (a'); (b)/(c) >= 20x; RSS < 300 MB and flat")
        print(json.dumps({"sizes": rows, "incremental": incremental}, default=str))
    finally:
        if not args.keep:
            drop_scratch()


if __name__ == "__main__":
    main()
