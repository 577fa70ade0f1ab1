"""The exposure log of ``/assign`` (``abstats.control.exposures``): a bounded buffer in the
serving process, a writer process that stores the batches, nothing accepted lost when the writer
dies or the API shuts down; on a real database."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from abstats.control import service
from abstats.control.assign import AssignmentConfig
from abstats.control.exposures import ExposureLogger, ExposureWriter
from abstats.db.engine import get_engine
from abstats.keys import create_key
from tests.control.conftest import make_experiment


@pytest.fixture
def config(committed: Engine) -> AssignmentConfig:
    with Session(committed) as session, session.begin():
        experiment = make_experiment(session, "exposed", policy={"ramp": None})
        variant_ids = {v.key: v.id for v in experiment.variants}
        experiment_id = experiment.id
    return AssignmentConfig(
        experiment_id=experiment_id,
        key="exposed",
        status="running",
        salt="s",
        control="v1",
        winner=None,
        weights={"v1": 1.0, "v2": 1.0},
        weight_epoch=0,
        variant_ids=variant_ids,
        model_versions={},
    )


def _stored(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(text("SELECT message_id FROM exposure ORDER BY message_id")))


def _wait_for(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_full_buffer_drops_new_exposures_and_counts_them(
    config: AssignmentConfig, committed: Engine
) -> None:
    # nothing can be acknowledged within these 15 appends (the writer process is still starting),
    # so exactly max_pending are accepted
    logger = ExposureLogger(get_engine, max_pending=10, flush_seconds=0.05)
    accepted = [logger.log(config, f"u{i}", "v1") for i in range(15)]
    assert accepted == [True] * 10 + [False] * 5
    assert logger.dropped == 5
    assert logger.flush(timeout=30)
    assert _stored(committed) == sorted(f"assign:0:u{i}" for i in range(10))
    assert logger.log(config, "later", "v2")  # room again once written
    assert logger.flush(timeout=30)
    logger.stop()
    assert len(_stored(committed)) == 11 and logger.written == 11 and logger.lost == 0


def test_stop_drains_everything_logged(config: AssignmentConfig, committed: Engine) -> None:
    logger = ExposureLogger(get_engine, flush_seconds=5.0, batch_size=300)
    for i in range(1000):
        assert logger.log(config, f"d{i}", "v2")
    logger.stop()  # no flush first: stop itself drains
    assert len(_stored(committed)) == 1000
    assert logger.written == 1000 and logger.lost == 0 and logger.pending() == 0
    assert logger.writer_pid is None


def test_batches_a_dead_writer_did_not_acknowledge_go_to_the_next_one(
    config: AssignmentConfig, committed: Engine
) -> None:
    logger = ExposureLogger(get_engine, flush_seconds=0.02)
    for i in range(100):
        logger.log(config, f"a{i}", "v1")
    assert logger.flush(timeout=30)
    pid = logger.writer_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the batches below are sent but never acknowledged
    try:
        for i in range(100):
            logger.log(config, f"b{i}", "v1")
        _wait_for(lambda: logger.in_flight == 100)
    finally:
        os.kill(pid, signal.SIGKILL)
    assert logger.flush(timeout=30)
    logger.stop()
    stored = _stored(committed)
    assert len(stored) == 200 and "assign:0:b99" in stored
    assert logger.writer_starts == 2


def test_the_writer_stores_one_exposure_per_unit_and_weight_epoch(
    config: AssignmentConfig, committed: Engine
) -> None:
    writer = ExposureWriter(committed)
    v1 = config.variant_ids["v1"]
    now = time.time()
    rows = [(config.experiment_id, v1, 0, "x", now)] * 3 + [(config.experiment_id, v1, 1, "x", now)]
    assert writer.write(rows) == (2, 0)
    assert writer.write(rows) == (0, 0)  # already written: not sent to the database again
    assert _stored(committed) == ["assign:0:x", "assign:1:x"]


def test_app_shutdown_drains_the_exposures_of_assign(committed: Engine) -> None:
    from abstats.api.app import create_app
    from abstats.keys import clear_cache

    with Session(committed) as session, session.begin():
        make_experiment(session, "drained", policy={"ramp": None})
        secret = create_key(session, scope="ingest").secret
        service.start(session, "drained", actor="key:test")
    clear_cache()
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app()) as client:
        for i in range(200):
            r = client.get(f"/v1/experiments/drained/assign?unit_id=s{i}", headers=headers)
            assert r.status_code == 200
    # the lifespan's shutdown hook drained the buffer: no flush was asked for
    assert len(_stored(committed)) == 200


def test_a_unit_id_that_is_not_valid_text_costs_only_itself(
    config: AssignmentConfig, committed: Engine
) -> None:
    logger = ExposureLogger(get_engine, flush_seconds=0.05)
    for unit in ("ok-1", "lone-\ud800", "ok-2"):
        assert logger.log(config, unit, "v1")
    assert logger.flush(timeout=30)
    logger.stop()
    assert _stored(committed) == ["assign:0:ok-1", "assign:0:ok-2"]
    assert logger.rejected == 1 and logger.written == 2
