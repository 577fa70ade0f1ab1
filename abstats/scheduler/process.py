"""The scheduler process (APScheduler 3.x, in-memory job store): analysis pipeline every
``analysis_interval_seconds``, drift every ``drift_interval_seconds``, outbox delivery every
``outbox_interval_seconds``; only the leader (see :mod:`abstats.scheduler.leader`) runs them.

Jobs coalesce (a backlog of missed runs runs once), run one instance at a time, and get a generous
misfire grace (a busy process runs a late job instead of dropping it)."""

from __future__ import annotations

import atexit
import signal
import threading
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import Engine

from abstats.config import Settings, get_settings
from abstats.db.engine import get_engine
from abstats.logging import get_logger
from abstats.scheduler.leader import LeaderLock
from abstats.scheduler.pipeline import run_drift_job, run_pipeline, running_experiments

log = get_logger(__name__)


class SchedulerJobs:
    """The job bodies; each checks leadership first and isolates failures per experiment."""

    def __init__(self, engine: Engine, leader: LeaderLock) -> None:
        self.engine = engine
        self.leader = leader

    def elect(self) -> None:
        self.leader.try_acquire()

    def analyse_all(self) -> None:
        if not self.leader.is_leader():
            return
        for key in running_experiments():
            if not self.leader.is_leader():
                return
            try:
                result = run_pipeline(key)
                log.info(
                    "scheduler.analysed",
                    experiment=key,
                    snapshot_id=result.snapshot.id,
                    created=result.created,
                    decisions=len(result.decisions),
                )
            except Exception:
                log.exception("scheduler.analysis_failed", experiment=key)

    def drift_all(self) -> None:
        if not self.leader.is_leader():
            return
        for key in running_experiments():
            try:
                run_drift_job(key)
            except Exception:
                log.exception("scheduler.drift_failed", experiment=key)

    def deliver_outbox(self) -> None:
        if not self.leader.is_leader():
            return
        from abstats.control.outbox import deliver_pending

        try:
            deliver_pending(self.engine)
        except Exception:
            log.exception("scheduler.outbox_failed")

    def maintain_partitions(self) -> None:
        """Keep the event tables' monthly partitions three months ahead (daily)."""
        if not self.leader.is_leader():
            return
        from abstats.db.partitions import ensure_partitions

        try:
            with self.engine.begin() as conn:
                report = ensure_partitions(conn)
            if report.created or report.blocked:
                log.info("scheduler.partitions", created=report.created, blocked=report.blocked)
        except Exception:
            log.exception("scheduler.partitions_failed")

    def prune_cloudevent_pairs(self) -> None:
        """Drop inference-logger halves whose other half never came (hourly)."""
        if not self.leader.is_leader():
            return
        from abstats.ingest.cloudevents import prune_pairs

        try:
            with self.engine.begin() as conn:
                removed = prune_pairs(conn)
            if removed:
                log.info("scheduler.cloudevent_pairs_pruned", removed=removed)
        except Exception:
            log.exception("scheduler.cloudevent_pairs_failed")


def configure(scheduler: BaseScheduler, jobs: SchedulerJobs, settings: Settings) -> BaseScheduler:
    analysis = settings.analysis_interval_seconds
    now = datetime.now(UTC)
    # standbys retry the election twice per analysis interval: a dead leader is replaced
    # within two intervals at worst (its session ends at once, the lock with it)
    election = max(min(analysis / 2, 30.0), 0.5)
    scheduler.add_job(jobs.elect, "interval", seconds=election, id="elect", next_run_time=now)
    scheduler.add_job(
        jobs.analyse_all, "interval", seconds=analysis, id="analysis", next_run_time=now
    )
    scheduler.add_job(
        jobs.drift_all, "interval", seconds=settings.drift_interval_seconds, id="drift"
    )
    scheduler.add_job(
        jobs.deliver_outbox, "interval", seconds=settings.outbox_interval_seconds, id="outbox"
    )
    scheduler.add_job(
        jobs.maintain_partitions, "interval", hours=24, id="partitions", next_run_time=now
    )
    scheduler.add_job(jobs.prune_cloudevent_pairs, "interval", hours=1, id="cloudevent-pairs")
    return scheduler


def _job_defaults(settings: Settings) -> dict[str, Any]:
    grace = int(max(settings.analysis_interval_seconds, settings.drift_interval_seconds) * 2)
    return {"coalesce": True, "max_instances": 1, "misfire_grace_time": max(grace, 30)}


def _executors() -> dict[str, Any]:
    # separate threads so a long analysis does not delay outbox delivery or the election
    return {"default": ThreadPoolExecutor(4)}


def start_background_scheduler(settings: Settings | None = None) -> BackgroundScheduler:
    """Run the scheduler in this process's background threads (``abstats serve
    --with-scheduler`` and ``abstats dev``); stopped at interpreter exit."""
    settings = settings or get_settings()
    engine = get_engine()
    leader = LeaderLock(engine)
    scheduler = BackgroundScheduler(
        executors=_executors(), job_defaults=_job_defaults(settings), timezone=UTC
    )
    configure(scheduler, SchedulerJobs(engine, leader), settings)
    scheduler.start()

    def stop() -> None:
        scheduler.shutdown(wait=False)
        leader.release()

    atexit.register(stop)
    log.info("scheduler.started", mode="background")
    return scheduler


def run_scheduler(settings: Settings | None = None) -> None:
    """``abstats scheduler``: block, running the jobs, until SIGTERM or SIGINT."""
    settings = settings or get_settings()
    engine = get_engine()
    leader = LeaderLock(engine)
    scheduler = BlockingScheduler(
        executors=_executors(), job_defaults=_job_defaults(settings), timezone=UTC
    )
    configure(scheduler, SchedulerJobs(engine, leader), settings)

    def _stop(signum: int, _frame: object) -> None:
        log.info("scheduler.stopping", signal=signum)
        threading.Thread(target=scheduler.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("scheduler.started", mode="blocking")
    try:
        scheduler.start()
    finally:
        leader.release()
