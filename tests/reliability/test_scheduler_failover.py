"""Two ``abstats scheduler`` processes and a ``kill -9`` of the leader in the middle of a ramp:
every policy decision is taken and applied exactly once.

tests/scheduler/test_leader.py covers the election and one snapshot per data state (policy off).
Here the policy acts: a running experiment whose candidate converts far better ramps 5 -> 25 -> 50
and is promoted, while a feeder thread keeps writing live traffic assigned by the current weights.
The leader is killed right after it commits a new snapshot (between the analysis and the decision
step) once the ramp has begun; the standby takes over and finishes. Afterwards: one decision per
(snapshot, action), each ramp step once, one weight epoch per weight-changing decision, one router
outbox item per weight change.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from abstats.db.models import Exposure, Outcome
from tests.reliability.harness import EXPERIMENT, seed, subprocess_env, wait_for

INTERVAL = 1.0
CONVERSION = {"v1": 0.2, "v2": 0.6}
POLICY: dict[str, Any] = {
    "mode": "auto",
    "mde": "10%",
    "min_units_per_variant": 30,
    "min_events_per_variant": 10,
    "min_runtime": "0s",
    "ramp": {"steps": [5, 25, 50, 100], "min_interval": "2s"},
    "on_srm": "pause",
}


class Feeder:
    """Live traffic: every tick, new units assigned by the current weight epoch, each exposed and
    converting with its variant's rate, stamped now."""

    def __init__(self, engine: Engine, experiment_id: int) -> None:
        self.engine = engine
        self.experiment_id = experiment_id
        self.rng = random.Random(8)
        self.stop = threading.Event()
        self.units = 0
        with engine.connect() as conn:
            self.variant_ids = {
                key: vid
                for vid, key in conn.execute(
                    text("SELECT id, key FROM variant WHERE experiment_id = :e"),
                    {"e": experiment_id},
                )
            }

    def tick(self, n: int = 60) -> None:
        with Session(self.engine) as session:
            weights: dict[str, float] = session.execute(
                text(
                    "SELECT weights FROM weight_epoch WHERE experiment_id = :e "
                    "ORDER BY epoch DESC LIMIT 1"
                ),
                {"e": self.experiment_id},
            ).scalar_one()
            keys = sorted(weights)
            now = datetime.now(UTC)
            exposures, outcomes = [], []
            for _ in range(n):
                self.units += 1
                unit = f"u{self.units}"
                variant = self.rng.choices(keys, [float(weights[k]) for k in keys])[0]
                exposures.append(
                    {
                        "experiment_id": self.experiment_id,
                        "variant_id": self.variant_ids[variant],
                        "unit_id": unit,
                        "ts": now,
                        "message_id": f"x{unit}",
                    }
                )
                outcomes.append(
                    {
                        "experiment_id": self.experiment_id,
                        "unit_id": unit,
                        "name": "converted",
                        "value": float(self.rng.random() < CONVERSION[variant]),
                        "ts": now,
                        "message_id": f"o{unit}",
                    }
                )
            session.execute(insert(Exposure), exposures)
            session.execute(insert(Outcome), outcomes)
            session.commit()

    def run(self) -> None:
        while not self.stop.is_set():
            self.tick()
            time.sleep(0.2)


def _spawn(tmp: Path, name: str, url: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp / f"{name}.log"
    env = subprocess_env(
        url,
        tmp / "data",
        ABSTATS_ANALYSIS_INTERVAL_SECONDS=str(INTERVAL),
        ABSTATS_DRIFT_INTERVAL_SECONDS="3600",
        ABSTATS_OUTBOX_INTERVAL_SECONDS="1",
        ABSTATS_LOG_LEVEL="INFO",
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "abstats", "scheduler"], env=env, stdout=out, stderr=out
        )
    return proc, log


@pytest.fixture
def schedulers(tmp_path: Path) -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
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


def _rows(engine: Engine, sql: str, experiment_id: int) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), {"e": experiment_id}))


def _decisions(engine: Engine, experiment_id: int) -> list[Any]:
    return _rows(
        engine,
        "SELECT id, snapshot_id, action, applied, weights_before, weights_after, status_after, "
        "evidence FROM decision WHERE experiment_id = :e ORDER BY id",
        experiment_id,
    )


def _leading(log: Path) -> bool:
    return "scheduler.leader_acquired" in log.read_text(errors="replace")


@pytest.mark.slow
def test_leader_killed_mid_ramp_every_decision_applied_once(
    scratch_url: str,
    scratch_engine: Engine,
    schedulers: list[tuple[subprocess.Popen[bytes], Path]],
    tmp_path: Path,
) -> None:
    from abstats.control import service as control

    seeded = seed(scratch_engine, {**EXPERIMENT, "policy": POLICY})
    exp = seeded.experiment_id
    with Session(scratch_engine) as session:
        control.start(session, EXPERIMENT["key"], actor="test")
        session.commit()
    feeder = Feeder(scratch_engine, exp)
    feeder.tick()

    schedulers.append(_spawn(tmp_path, "first", scratch_url))
    wait_for(lambda: _leading(schedulers[0][1]), 30, "the first scheduler to lead")
    schedulers.append(_spawn(tmp_path, "second", scratch_url))
    feeding = threading.Thread(target=feeder.run, daemon=True)
    feeding.start()
    try:
        wait_for(
            lambda: any(d.action == "advance_ramp" for d in _decisions(scratch_engine, exp)),
            60,
            "the first ramp advance",
        )
        assert not _leading(schedulers[1][1]), "two leaders at once"
        # kill the leader the moment it has committed a new snapshot: it is then inside the
        # pipeline, between the analysis and the decision step (or writing the reports)
        count_sql = "SELECT count(*) FROM analysis_snapshot WHERE experiment_id = :e"
        seen = _rows(scratch_engine, count_sql, exp)[0][0]
        deadline = time.monotonic() + 30
        while _rows(scratch_engine, count_sql, exp)[0][0] == seen:
            assert time.monotonic() < deadline, "no new snapshot from the leader"
            time.sleep(0.005)
        schedulers[0][0].send_signal(signal.SIGKILL)
        schedulers[0][0].wait(10)
        killed_at = time.monotonic()
        decisions_at_kill = len(_decisions(scratch_engine, exp))
        wait_for(lambda: _leading(schedulers[1][1]), 10 * INTERVAL, "the standby to take over")
        handover = time.monotonic() - killed_at
        wait_for(
            lambda: (
                _rows(scratch_engine, "SELECT status FROM experiment WHERE id = :e", exp)[0][0]
                != "running"
            ),
            90,
            "the new leader to finish the ramp",
        )
        time.sleep(3 * INTERVAL)  # more ticks on the finished experiment: nothing more happens
    finally:
        feeder.stop.set()
        feeding.join(10)

    decisions = _decisions(scratch_engine, exp)
    actions = [d.action for d in decisions]
    print(
        f"\nscheduler: leader killed after {decisions_at_kill} decisions, hand-over "
        f"{handover:.1f}s; decisions {actions}; {feeder.units} units fed"
    )
    status, winner = _rows(
        scratch_engine, "SELECT status, winner_variant FROM experiment WHERE id = :e", exp
    )[0]
    assert (status, winner) == ("concluded", "v2"), (actions, [d.evidence for d in decisions])
    assert actions == ["start", "advance_ramp", "advance_ramp", "promote"], actions
    assert all(d.applied for d in decisions)
    # one decision per (snapshot, action); the policy's decisions rest on distinct snapshots
    per_snapshot = Counter((d.snapshot_id, d.action) for d in decisions if d.snapshot_id)
    assert set(per_snapshot.values()) == {1}
    assert len({d.snapshot_id for d in decisions[1:]}) == 3
    assert [(d.evidence["from_step"], d.evidence["to_step"]) for d in decisions[1:3]] == [
        (5.0, 25.0),
        (25.0, 50.0),
    ]
    # one weight epoch per weight change, opened by its decision, contiguous
    epochs = _rows(
        scratch_engine,
        "SELECT epoch, decision_id, weights FROM weight_epoch WHERE experiment_id = :e "
        "ORDER BY epoch",
        exp,
    )
    assert [e.epoch for e in epochs] == list(range(len(epochs)))
    assert [e.decision_id for e in epochs] == [None] + [d.id for d in decisions]
    assert [e.weights for e in epochs[1:]] == [d.weights_after for d in decisions]
    shares = [round(100 * e.weights["v2"] / sum(e.weights.values())) for e in epochs[1:]]
    assert shares == [5, 25, 50, 100]
    routed = Counter(
        r.decision_id
        for r in _rows(
            scratch_engine, "SELECT decision_id FROM outbox WHERE experiment_id = :e", exp
        )
    )
    assert routed == Counter(d.id for d in decisions)
    assert "Traceback" not in schedulers[1][1].read_text(errors="replace")
    assert os.path.getsize(schedulers[0][1]) > 0
