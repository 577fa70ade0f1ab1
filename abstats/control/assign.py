"""Sticky assignment for ``GET /v1/experiments/{key}/assign``.

Weighted rendezvous hashing (Schindelhauer and Schomaker 2005, "Weighted distributed hash
tables"): for every variant ``v`` with weight ``w_v > 0`` draw ``u_v = H(salt, unit, v)`` uniform
on (0, 1) and pick the variant with the smallest ``-ln(u_v) / w_v``. The ``-ln(u)`` are independent
Exp(1) draws, so ``-ln(u_v)/w_v`` is Exp(w_v) and the minimum falls on ``v`` with probability
``w_v / sum(w)``. A unit's draws never change, so it keeps its variant while the weights stay; when
weights change only the scores of the changed variants move, so a unit moves only *into* a variant
whose weight grew or *out of* one whose weight shrank (relative to the others).

The request path reads no database: experiment configs are cached in-process
(``RefreshingCache``: reloaded in the background, at most ``CONFIG_MAX_AGE_SECONDS`` old) and
exposures go to a queue that a background thread writes in batches
(``abstats.ingest.service.store_exposures``, COPY), one exposure per unit and weight epoch.
"""

from __future__ import annotations

import hashlib
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from abstats.cache import RefreshingCache
from abstats.db.engine import is_connection_error, new_session
from abstats.db.models import Experiment
from abstats.experiments import repository
from abstats.ingest.service import ExposureRecord, store_exposures
from abstats.logging import get_logger

# A config is reloaded in the background once it is CONFIG_TTL_SECONDS old and never served
# older than CONFIG_MAX_AGE_SECONDS: a weight change made by another process (the scheduler)
# reaches /assign within 2 s, which keeps exposures stamped after a change from being assigned
# under the old weights for long (the SRM check compares them with the weight history by time).
CONFIG_TTL_SECONDS = 1.5
CONFIG_MAX_AGE_SECONDS = 2.0
_TWO_64 = float(2**64)
_log = get_logger(__name__)


def unit_draw(salt: str, unit_id: str, variant: str) -> float:
    """``H(salt, unit, variant)`` mapped to the open interval (0, 1)."""
    digest = hashlib.blake2b(f"{salt}\x1f{unit_id}\x1f{variant}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / _TWO_64


def rendezvous_variant(salt: str, unit_id: str, weights: Mapping[str, float]) -> str:
    """The variant of ``unit_id`` under ``weights`` (see module docstring)."""
    best: str | None = None
    best_score = math.inf
    for variant, weight in weights.items():
        if weight <= 0:
            continue
        score = -math.log(unit_draw(salt, unit_id, variant)) / weight
        if score < best_score:
            best, best_score = variant, score
    if best is None:
        raise ValueError("at least one weight must be positive")
    return best


@dataclass(frozen=True)
class AssignmentConfig:
    """What ``/assign`` needs of one experiment (cached)."""

    experiment_id: int
    key: str
    status: str
    salt: str
    control: str
    winner: str | None
    weights: dict[str, float]
    weight_epoch: int
    variant_ids: dict[str, int]
    model_versions: dict[str, str]

    @property
    def randomizing(self) -> bool:
        return self.status == "running"

    def fixed_variant(self) -> str:
        """Not running: concluded answers the winner, everything else the control."""
        if self.status == "concluded" and self.winner:
            return self.winner
        return self.control


def load_config(session: Session, key: str) -> AssignmentConfig:
    experiment: Experiment = repository.get_experiment(session, key)
    epoch = repository.current_epoch(session, experiment.id)
    retired = {v.key for v in experiment.variants if v.retired}
    weights = {
        k: (0.0 if k in retired else float(w)) for k, w in (epoch.weights if epoch else {}).items()
    }
    return AssignmentConfig(
        experiment_id=experiment.id,
        key=experiment.key,
        status=experiment.status,
        salt=experiment.salt,
        control=experiment.control_variant,
        winner=experiment.winner_variant,
        weights=weights,
        weight_epoch=epoch.epoch if epoch else 0,
        variant_ids={v.key: v.id for v in experiment.variants},
        model_versions={v.key: v.model_version for v in experiment.variants},
    )


def _load_config_blocking(key: str) -> AssignmentConfig:
    with new_session() as session:
        config = load_config(session, key)
        session.commit()
    return config


config_cache: RefreshingCache[AssignmentConfig] = RefreshingCache(
    _load_config_blocking, ttl=CONFIG_TTL_SECONDS, max_stale=CONFIG_MAX_AGE_SECONDS
)


@dataclass(frozen=True)
class Assignment:
    variant: str
    model_version: str
    weights_epoch: int
    forced: bool
    logged: bool

    def as_dict(self, key: str, status: str) -> dict[str, object]:
        return {
            "experiment": key,
            "variant": self.variant,
            "model_version": self.model_version,
            "weights_epoch": self.weights_epoch,
            "status": status,
            "forced": self.forced,
        }


def assign(
    config: AssignmentConfig,
    unit_id: str,
    *,
    target_variant: str | None = None,
    log: Callable[[AssignmentConfig, str, str], bool] | None = None,
) -> Assignment:
    """Assign ``unit_id``; ``log(config, unit_id, variant)`` records a randomized exposure.

    Forced (``X-Target-Variant``) and non-running answers are not randomized and are not logged
    as exposures: they would bias the sample ratio check and the comparison.
    """
    if target_variant is not None:
        return Assignment(
            target_variant,
            config.model_versions.get(target_variant, ""),
            config.weight_epoch,
            forced=True,
            logged=False,
        )
    if not config.randomizing:
        variant = config.fixed_variant()
        return Assignment(
            variant, config.model_versions.get(variant, ""), config.weight_epoch, False, False
        )
    variant = rendezvous_variant(config.salt, unit_id, config.weights)
    logged = log(config, unit_id, variant) if log is not None else False
    return Assignment(
        variant, config.model_versions.get(variant, ""), config.weight_epoch, False, logged
    )


class ExposureLogger:
    """Buffers exposures from ``/assign`` and writes them in batches from a background thread.

    One exposure per (experiment, weight epoch, unit): the message id is
    ``assign:<epoch>:<unit>`` (the table's unique key makes repeats no-ops) and recently logged
    units are skipped before they reach the queue. When the queue is full, exposures are dropped
    and counted rather than slowing the request path down.
    """

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        *,
        batch_size: int = 5_000,
        flush_seconds: float = 0.25,
        max_queue: int = 200_000,
        recent_size: int = 500_000,
    ) -> None:
        self._engine_factory = engine_factory
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self._queue: queue.Queue[ExposureRecord | None] = queue.Queue(maxsize=max_queue)
        self._recent: OrderedDict[tuple[int, int, str], None] = OrderedDict()
        self._recent_size = recent_size
        self._recent_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self.written = 0
        self.dropped = 0
        self.failed_batches = 0
        self.rejected = 0
        self._stopping = threading.Event()

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping.clear()
                self._thread = threading.Thread(
                    target=self._run, name="abstats-exposure-logger", daemon=True
                )
                self._thread.start()

    def log(self, config: AssignmentConfig, unit_id: str, variant: str) -> bool:
        marker = (config.experiment_id, config.weight_epoch, unit_id)
        with self._recent_lock:
            if marker in self._recent:
                return False
            self._recent[marker] = None
            if len(self._recent) > self._recent_size:
                self._recent.popitem(last=False)
        record = ExposureRecord(
            experiment_id=config.experiment_id,
            variant_id=config.variant_ids[variant],
            unit_id=unit_id,
            ts=datetime.now(UTC),
            message_id=f"assign:{config.weight_epoch}:{unit_id}",
        )
        if self._thread is None:
            self.start()
        try:
            self._idle.clear()
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _run(self) -> None:
        while True:
            batch: list[ExposureRecord] = []
            stop = False
            try:
                item = self._queue.get(timeout=self.flush_seconds)
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            except queue.Empty:
                pass
            deadline = time.monotonic() + self.flush_seconds
            while batch and len(batch) < self.batch_size and not stop:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            if batch:
                self._write(batch)
            if self._queue.empty():
                self._idle.set()
            if stop:
                return

    def _write(self, batch: list[ExposureRecord]) -> None:
        """Write a batch; a batch the database refuses is split in halves until the record it
        refuses is found, so one bad record costs only itself (and is logged and counted). While
        the database is unreachable the batch is retried (with backoff) rather than dropped."""
        delay = 0.25
        while True:
            try:
                self._store(batch)
                return
            except Exception as exc:
                if not is_connection_error(exc):
                    break
                if self._stopping.is_set():  # shutting down with the database away
                    self.failed_batches += 1
                    self.dropped += len(batch)
                    _log.error("exposure batch lost at shutdown", size=len(batch))
                    return
                _log.warning("exposure batch waits for the database", size=len(batch))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        if len(batch) == 1:
            self.failed_batches += 1
            self.rejected += 1
            record = batch[0]
            self._forget(record)
            _log.error(
                "exposure refused by the database",
                experiment_id=record.experiment_id,
                message_id=record.message_id.encode("unicode_escape").decode()[:300],
            )
            return
        middle = len(batch) // 2
        self._write(batch[:middle])
        self._write(batch[middle:])

    def _store(self, batch: list[ExposureRecord]) -> None:
        with Session(self._engine_factory()) as session, session.begin():
            store_exposures(session, batch, source="assign")
        self.written += len(batch)

    def _forget(self, record: ExposureRecord) -> None:
        """Let a later /assign of this unit log it again."""
        epoch = int(record.message_id.split(":", 2)[1])
        with self._recent_lock:
            self._recent.pop((record.experiment_id, epoch, record.unit_id), None)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.wait(timeout=0.05) and self._queue.empty():
                return True
        return False

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._stopping.set()
            self._queue.put(None)
            self._thread.join(timeout=10.0)
        self._thread = None
