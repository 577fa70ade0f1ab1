"""Two real scheduler processes against one database: one leads, each snapshot is produced once,
and killing the leader with SIGKILL hands over to the other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from abstats.db.models import Experiment, Exposure, Prediction, Variant, WeightEpoch

INTERVAL = 1.0


def _spawn(tmp: Path, name: str, database_url: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp / f"{name}.log"
    env = {
        **os.environ,
        "ABSTATS_DATABASE_URL": database_url,
        "ABSTATS_ANALYSIS_INTERVAL_SECONDS": str(INTERVAL),
        "ABSTATS_DRIFT_INTERVAL_SECONDS": "3600",
        "ABSTATS_OUTBOX_INTERVAL_SECONDS": "3600",
        "ABSTATS_LOG_JSON": "false",
        "ABSTATS_REPORTS_DIR": str(tmp / "reports"),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "abstats", "scheduler"], env=env, stdout=out, stderr=out
        )
    return proc, log


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _experiment(engine: Engine) -> tuple[int, dict[str, int]]:
    with Session(engine) as session:
        experiment = Experiment(
            key=f"sched-{uuid.uuid4().hex[:6]}",
            name="s",
            status="running",
            control_variant="a",
            salt="s",
            metrics=[{"key": "errors", "kind": "error_rate", "role": "secondary"}],
            policy={"mode": "off"},
            router={"backend": "builtin"},
        )
        experiment.variants = [Variant(key="a", position=0), Variant(key="b", position=1)]
        session.add(experiment)
        session.flush()
        session.add(
            WeightEpoch(
                experiment_id=experiment.id,
                epoch=0,
                weights={"a": 1, "b": 1},
                started_at=datetime(2026, 11, 1, tzinfo=UTC),
            )
        )
        session.commit()
        return experiment.id, {v.key: v.id for v in experiment.variants}


def _post_batch(engine: Engine, experiment_id: int, variants: dict[str, int], batch: int) -> None:
    ts = datetime(2026, 11, 1, 1, batch, tzinfo=UTC)
    units = [f"u{batch}-{i}" for i in range(50)]
    with Session(engine) as session:
        session.execute(
            insert(Exposure),
            [
                {
                    "experiment_id": experiment_id,
                    "variant_id": variants["ab"[i % 2]],
                    "unit_id": u,
                    "ts": ts,
                    "message_id": f"x{u}",
                }
                for i, u in enumerate(units)
            ],
        )
        session.execute(
            insert(Prediction),
            [
                {
                    "experiment_id": experiment_id,
                    "variant_id": variants["ab"[i % 2]],
                    "unit_id": u,
                    "ts": ts,
                    "message_id": f"p{u}",
                    "latency_ms": 5.0,
                    "error": False,
                }
                for i, u in enumerate(units)
            ],
        )
        session.commit()


def _last_prediction_id(engine: Engine, experiment_id: int) -> str:
    with engine.connect() as conn:
        value = conn.execute(
            text("SELECT max(id) FROM prediction WHERE experiment_id = :e"), {"e": experiment_id}
        ).scalar_one()
    return str(value)


def _snapshots(engine: Engine, experiment_id: int) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        return [
            (r[0], r[1])
            for r in conn.execute(
                text(
                    "SELECT id, watermark->>'prediction_id' FROM analysis_snapshot "
                    "WHERE experiment_id = :e ORDER BY id"
                ),
                {"e": experiment_id},
            )
        ]


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    yield started
    for proc, _ in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _leader(started: list[tuple[subprocess.Popen[bytes], Path]]) -> int | None:
    leaders = [
        i
        for i, (p, log) in enumerate(started)
        if p.poll() is None and "scheduler.leader_acquired" in log.read_text()
    ]
    return leaders[-1] if leaders else None


@pytest.mark.slow
def test_one_leader_each_snapshot_once_and_handover_on_kill(
    committed_engine: Engine,
    database_url: str,
    tmp_path: Path,
    processes: list[tuple[subprocess.Popen[bytes], Path]],
) -> None:
    experiment_id, variants = _experiment(committed_engine)
    processes.append(_spawn(tmp_path, "first", database_url))
    _wait(lambda: _leader(processes) == 0, 30, "the first process to lead")
    processes.append(_spawn(tmp_path, "second", database_url))
    time.sleep(3 * INTERVAL)  # the second is up and retrying the election
    assert processes[1][0].poll() is None
    assert "scheduler.leader_acquired" not in processes[1][1].read_text()

    # watermarks are prediction ids; identity sequences are not transactional, so earlier tests
    # of the session (even rolled back) have moved them: expect the ids this test inserted
    marks: list[str] = []
    for batch in range(4):
        _post_batch(committed_engine, experiment_id, variants, batch)
        marks.append(_last_prediction_id(committed_engine, experiment_id))
        _wait(
            lambda m=marks[-1]: _snapshots(committed_engine, experiment_id)[-1][1] == m,
            20,
            f"the snapshot of batch {batch}",
        )
    time.sleep(3 * INTERVAL)  # more scheduler ticks without new events: no new snapshot
    snapshots = _snapshots(committed_engine, experiment_id)
    # each data state once (the first, before any event, is the empty experiment)
    assert [w for _, w in snapshots] in (marks, ["0", *marks])
    before_kill = len(snapshots)

    processes[0][0].send_signal(signal.SIGKILL)
    processes[0][0].wait(10)
    killed_at = time.monotonic()
    _post_batch(committed_engine, experiment_id, variants, 4)
    last = _last_prediction_id(committed_engine, experiment_id)
    _wait(lambda: _leader(processes) == 1, 2 * INTERVAL + 10, "the second process to take over")
    _wait(
        lambda: _snapshots(committed_engine, experiment_id)[-1][1] == last,
        20,
        "a snapshot from the new leader",
    )
    handover = time.monotonic() - killed_at
    snapshots = _snapshots(committed_engine, experiment_id)
    assert len(snapshots) == before_kill + 1 and snapshots[-1][1] == last
    with committed_engine.connect() as conn:
        requests = conn.execute(
            text("SELECT sum(requests) FROM analysis_unit WHERE experiment_id = :e"),
            {"e": experiment_id},
        ).scalar_one()
    assert requests == 250  # no batch was folded twice
    print(f"hand-over after SIGKILL: {handover:.1f}s (analysis interval {INTERVAL}s)")
