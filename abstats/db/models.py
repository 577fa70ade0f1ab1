"""ORM models: every entity of docs/concepts.md.

Event tables (exposure, prediction, outcome) are written with COPY by ``abstats.ingest`` and read
by SQL aggregation in ``abstats.analysis``; the ORM classes exist for the schema and for tests.
Variants are referred to by ``variant.id`` (a small integer) in the event tables so aggregation
groups on integers, not strings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column, relationship

from abstats.db.base import Base

EXPERIMENT_STATUSES = ("draft", "running", "paused", "concluded", "rolled_back")
API_SCOPES = ("ingest", "read", "admin")


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class ApiKey(Base):
    __tablename__ = "api_key"
    __table_args__ = (CheckConstraint("scope IN ('ingest','read','admin')", name="scope"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    scope: Mapped[str] = mapped_column(String(16), nullable=False)
    secret_hash: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiKeyEvent(Base):
    """The audit trail of API keys: who created or revoked which key, when (never the secret)."""

    __tablename__ = "api_key_event"
    __table_args__ = (CheckConstraint("action IN ('create','revoke')", name="action"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    scope: Mapped[str] = mapped_column(String(16), nullable=False)
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = _now()


class Experiment(Base):
    __tablename__ = "experiment"
    __table_args__ = (
        CheckConstraint("key ~ '^[a-z0-9][a-z0-9_-]{0,63}$'", name="key_format"),
        CheckConstraint(
            "status IN ('draft','running','paused','concluded','rolled_back')", name="status"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="draft")
    control_variant: Mapped[str] = mapped_column(String(64), nullable=False)
    winner_variant: Mapped[str | None] = mapped_column(String(64))
    salt: Mapped[str] = mapped_column(String(64), nullable=False)
    # metrics: list of metric definitions (abstats.engine.specs.MetricSpec; docs/concepts.md)
    metrics: Mapped[list[Any]] = mapped_column(nullable=False, default=list)
    # policy: docs/policy.md (validated by abstats.engine.specs.Policy)
    policy: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    # router: {"backend": "builtin"|"flagd_file"|"nginx"|"sagemaker"|"webhook", "config": {...}}
    # (abstats.experiments.specs.RouterSpec; docs/routers.md)
    router: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    # notifications: {"webhook_url": ..., "secret": ...} or {}
    notifications: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", nullable=False, default=dict)
    # integrations: {"cloudevents": {...}, "mlflow": {...}} (abstats.experiments.integrations)
    integrations: Mapped[dict[str, Any]] = mapped_column(
        nullable=False, default=dict, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    variants: Mapped[list[Variant]] = relationship(
        back_populates="experiment", order_by="Variant.position", cascade="all, delete-orphan"
    )


class Variant(Base):
    __tablename__ = "variant"
    __table_args__ = (
        UniqueConstraint("experiment_id", "key"),
        CheckConstraint("key ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'", name="key_format"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False
    )
    key: Mapped[str] = mapped_column(String(64), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    model_version: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", nullable=False, default=dict)
    retired: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    experiment: Mapped[Experiment] = relationship(back_populates="variants")


class WeightEpoch(Base):
    """One period of constant weights. Epoch 0 opens at start; every change opens the next."""

    __tablename__ = "weight_epoch"
    __table_args__ = (UniqueConstraint("experiment_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False
    )
    epoch: Mapped[int] = mapped_column(Integer, nullable=False)
    # {variant_key: weight}; shares are weight / sum
    weights: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    started_at: Mapped[datetime] = _now()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decision_id: Mapped[int | None] = mapped_column(BigInteger)


# Event tables: PARTITION BY RANGE (ts), primary key (id, ts), monthly partitions made by
# abstats.db.partitions. Idempotency (abstats.ingest.repository): unique (experiment_id,
# message_id, ts) per table, which the partitions can enforce (it contains ts); events whose ts
# the server chose, and /assign's exposures, are also claimed in EventMessage. message_id is
# COLLATE "C": the write path sorts batches in code-point order, the index's order (migration 0008).
PARTITIONED_BY_TIME = {"postgresql_partition_by": "RANGE (ts)"}


class EventMessage(Base):
    """The claim that makes ``(experiment, kind, message_id)`` unique across the time partitions of
    the event tables (kind ``e``xposure, ``p``rediction, ``o``utcome), for the events whose
    identity is their message id alone: those stamped by the server and ``/assign``'s exposures
    (and every event stored before migration 0008)."""

    __tablename__ = "event_message"

    # no foreign key: a trigger call per event on the ingest path; ids are never reused
    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(1), primary_key=True)
    message_id: Mapped[str] = mapped_column(Text, primary_key=True)


class Exposure(Base):
    __tablename__ = "exposure"
    __table_args__ = (
        Index("ix_exposure_experiment_id_unit_id_ts", "experiment_id", "unit_id", "ts"),
        Index("ix_exposure_experiment_id_id", "experiment_id", "id"),
        Index(
            "uq_exposure_experiment_id_message_id_ts",
            "experiment_id",
            "message_id",
            "ts",
            unique=True,
        ),
        PARTITIONED_BY_TIME,
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False
    )
    variant_id: Mapped[int] = mapped_column(
        ForeignKey("variant.id", ondelete="CASCADE"), nullable=False
    )
    unit_id: Mapped[str] = mapped_column(Text, nullable=False)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    message_id: Mapped[str] = mapped_column(Text(collation="C"), nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False, server_default="api")
    ingested_at: Mapped[datetime] = _now()


class Prediction(Base):
    __tablename__ = "prediction"
    __table_args__ = (
        Index("ix_prediction_experiment_id_request_id", "experiment_id", "request_id"),
        Index("ix_prediction_experiment_id_unit_id", "experiment_id", "unit_id"),
        Index("ix_prediction_experiment_id_id", "experiment_id", "id"),
        Index(
            "uq_prediction_experiment_id_message_id_ts",
            "experiment_id",
            "message_id",
            "ts",
            unique=True,
        ),
        CheckConstraint("latency_ms IS NULL OR latency_ms >= 0", name="latency_nonnegative"),
        PARTITIONED_BY_TIME,
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False
    )
    variant_id: Mapped[int] = mapped_column(
        ForeignKey("variant.id", ondelete="CASCADE"), nullable=False
    )
    unit_id: Mapped[str] = mapped_column(Text, nullable=False)
    request_id: Mapped[str | None] = mapped_column(Text)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    score: Mapped[float | None] = mapped_column(Float)
    label: Mapped[float | None] = mapped_column(Float)
    value: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    features: Mapped[dict[str, Any] | None] = mapped_column()
    message_id: Mapped[str] = mapped_column(Text(collation="C"), nullable=False)
    ingested_at: Mapped[datetime] = _now()


class Outcome(Base):
    __tablename__ = "outcome"
    __table_args__ = (
        Index("ix_outcome_experiment_id_unit_id", "experiment_id", "unit_id"),
        Index("ix_outcome_experiment_id_request_id", "experiment_id", "request_id"),
        Index("ix_outcome_experiment_id_id", "experiment_id", "id"),
        Index(
            "uq_outcome_experiment_id_message_id_ts",
            "experiment_id",
            "message_id",
            "ts",
            unique=True,
        ),
        PARTITIONED_BY_TIME,
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False
    )
    unit_id: Mapped[str] = mapped_column(Text, nullable=False)
    request_id: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    message_id: Mapped[str] = mapped_column(Text(collation="C"), nullable=False)
    ingested_at: Mapped[datetime] = _now()


class CloudEventPair(Base):
    """The request and response CloudEvents of one inference (one ``ce-id``), paired into one
    prediction (migration 0006, ``abstats.ingest.cloudevents``). Whichever half arrives second
    finds the first here (an upsert on the primary key locks the row), and the prediction is
    written with a message id derived from the CloudEvent id, so resends store nothing twice."""

    __tablename__ = "cloudevent_pair"

    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiment.id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    variant: Mapped[str] = mapped_column(String(64), nullable=False)
    unit_id: Mapped[str | None] = mapped_column(Text)
    request_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    response_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    responded: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    score: Mapped[float | None] = mapped_column(Float)
    error: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    created_at: Mapped[datetime] = _now()


class AnalysisSnapshot(Base):
    """Immutable record of one analysis run. ``result`` holds statistics, tests, SRM, drift."""

    __tablename__ = "analysis_snapshot"
    __table_args__ = (
        UniqueConstraint("experiment_id", "cutoff"),
        Index("ix_analysis_snapshot_experiment_id_created_at", "experiment_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False
    )
    # data cut-off: events with ts <= cutoff (and ingested up to the watermark) are included
    cutoff: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    watermark: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    weight_epoch: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    recommendation: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    result: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    created_at: Mapped[datetime] = _now()


class Decision(Base):
    """Immutable record of one change of weights or status (or a recommendation of one)."""

    __tablename__ = "decision"
    __table_args__ = (
        Index("ix_decision_experiment_id_id", "experiment_id", "id"),
        # the same snapshot never yields the same action twice
        Index(
            "uq_decision_snapshot_id_action",
            "snapshot_id",
            "action",
            unique=True,
            postgresql_where=text("snapshot_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False
    )
    snapshot_id: Mapped[int | None] = mapped_column(
        ForeignKey("analysis_snapshot.id", ondelete="SET NULL")
    )
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    applied: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    status_before: Mapped[str | None] = mapped_column(String(16))
    status_after: Mapped[str | None] = mapped_column(String(16))
    weights_before: Mapped[dict[str, Any] | None] = mapped_column()
    weights_after: Mapped[dict[str, Any] | None] = mapped_column()
    evidence: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    router_result: Mapped[dict[str, Any] | None] = mapped_column()
    created_at: Mapped[datetime] = _now()


class OutboxItem(Base):
    """A side effect to deliver at least once after its decision commits (router call, webhook)."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "next_attempt_at", postgresql_where=text("done_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False
    )
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decision.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # router | notify
    payload: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = _now()
    last_error: Mapped[str | None] = mapped_column(Text)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()


# --- Analysis rollups (migration 0002, abstats.analysis) -------------------------------------
# Per-unit rollups are exact and additive: each analysis run adds the sums of the events between
# the previous and the new watermark (upsert), so a re-analysis reads only new events, and a
# rebuild (truncate + one run from id 0) gives the same rows. Sums of float values are NUMERIC so
# that addition is exact and the order of batches cannot change a single bit. The per-unit tables
# have no foreign key (a check per upserted row costs as much as the upsert itself); their rows
# are derived data, removed with ``abstats.analysis.rollup.clear_rollups``.


class AnalysisWatermark(Base):
    """Highest event id of each table folded into the rollups (and into drift windows)."""

    __tablename__ = "analysis_watermark"

    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiment.id", ondelete="CASCADE"), primary_key=True
    )
    exposure_id: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    prediction_id: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    outcome_id: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    drift_prediction_id: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    drift_outcome_id: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # greatest event timestamp folded in so far (the data cut-off of the next snapshot)
    max_event_ts: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = _now()
    # epoch start times that analysis_cell is stratified by (None: cells not built)
    cell_epochs: Mapped[list[datetime] | None] = mapped_column(ARRAY(DateTime(timezone=True)))


class AnalysisUnit(Base):
    """One randomisation unit: its first exposure (variant, time) and its prediction sums."""

    __tablename__ = "analysis_unit"
    __table_args__ = (
        Index("ix_analysis_unit_experiment_id_first_ts", "experiment_id", "first_ts"),
    )

    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[str] = mapped_column(Text, primary_key=True)
    variant_id: Mapped[int] = mapped_column(Integer, nullable=False)
    first_ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    has_exposure: Mapped[bool] = mapped_column(Boolean, nullable=False)
    mixed: Mapped[bool] = mapped_column(Boolean, nullable=False)
    requests: Mapped[int] = mapped_column(BigInteger, nullable=False)
    errors: Mapped[int] = mapped_column(BigInteger, nullable=False)
    latency_n: Mapped[int] = mapped_column(BigInteger, nullable=False)
    latency_sum: Mapped[Any] = mapped_column(Numeric, nullable=False)


class AnalysisUnitOutcome(Base):
    """Per unit and outcome name: sum and count of values, and whether any value was > 0."""

    __tablename__ = "analysis_unit_outcome"
    __table_args__ = (
        Index(
            "ix_analysis_unit_outcome_experiment_id_name_value_sum",
            "experiment_id",
            "name",
            "value_sum",
        ),
    )

    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    unit_id: Mapped[str] = mapped_column(Text, primary_key=True)
    value_sum: Mapped[Any] = mapped_column(Numeric, nullable=False)
    value_count: Mapped[int] = mapped_column(BigInteger, nullable=False)
    positive: Mapped[bool] = mapped_column(Boolean, nullable=False)
    last_ts: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class AnalysisUnitWindow(Base):
    """Per unit, outcome name and attribution window: sum and count of the outcome's values
    stamped within the window after the unit's first exposure, and whether any was > 0."""

    __tablename__ = "analysis_unit_window"

    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_seconds: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[str] = mapped_column(Text, primary_key=True)
    value_sum: Mapped[Any] = mapped_column(Numeric, nullable=False)
    value_count: Mapped[int] = mapped_column(BigInteger, nullable=False)
    positive: Mapped[bool] = mapped_column(Boolean, nullable=False)


class AnalysisUnitSegment(Base):
    """Per unit and feature: the feature's value in the unit's first prediction ('' without)."""

    __tablename__ = "analysis_unit_segment"

    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    feature: Mapped[str] = mapped_column(String(64), primary_key=True)
    unit_id: Mapped[str] = mapped_column(Text, primary_key=True)
    segment: Mapped[str] = mapped_column(Text, nullable=False)


class AnalysisUnitClassification(Base):
    """Per unit and (label outcome, threshold): confusion counts and log-loss sums of the unit's
    predictions joined to their label outcome on request_id."""

    __tablename__ = "analysis_unit_classification"

    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(64), primary_key=True)
    threshold: Mapped[float] = mapped_column(Float, primary_key=True)
    unit_id: Mapped[str] = mapped_column(Text, primary_key=True)
    tp: Mapped[int] = mapped_column(BigInteger, nullable=False)
    fp: Mapped[int] = mapped_column(BigInteger, nullable=False)
    tn: Mapped[int] = mapped_column(BigInteger, nullable=False)
    fn: Mapped[int] = mapped_column(BigInteger, nullable=False)
    log_loss_sum: Mapped[Any] = mapped_column(Numeric, nullable=False)
    log_loss_n: Mapped[int] = mapped_column(BigInteger, nullable=False)


class AnalysisUnitScore(Base):
    """Per unit and label outcome: the unit's labelled predictions as a sparse histogram on the
    score bins (ascending bins with their positives and negatives) and its score moments (AUC
    with DeLong's variance clustered by unit; migration 0009)."""

    __tablename__ = "analysis_unit_score"

    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(64), primary_key=True)
    unit_id: Mapped[str] = mapped_column(Text, primary_key=True)
    bins: Mapped[list[int]] = mapped_column(ARRAY(SmallInteger), nullable=False)
    positives: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False)
    negatives: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False)
    p0: Mapped[int] = mapped_column(BigInteger, nullable=False)
    p1: Mapped[int] = mapped_column(BigInteger, nullable=False)
    p2: Mapped[int] = mapped_column(BigInteger, nullable=False)
    p3: Mapped[int] = mapped_column(BigInteger, nullable=False)
    p4: Mapped[int] = mapped_column(BigInteger, nullable=False)
    p5: Mapped[int] = mapped_column(BigInteger, nullable=False)
    n0: Mapped[int] = mapped_column(BigInteger, nullable=False)
    n1: Mapped[int] = mapped_column(BigInteger, nullable=False)
    n2: Mapped[int] = mapped_column(BigInteger, nullable=False)
    n3: Mapped[int] = mapped_column(BigInteger, nullable=False)
    n4: Mapped[int] = mapped_column(BigInteger, nullable=False)
    n5: Mapped[int] = mapped_column(BigInteger, nullable=False)


class AnalysisUnitLatency(Base):
    """Per unit: its log-spaced latency bins with requests (ascending) and the requests at or
    below each of them (clustered latency quantiles; migration 0004)."""

    __tablename__ = "analysis_unit_latency"

    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    unit_id: Mapped[str] = mapped_column(Text, primary_key=True)
    bins: Mapped[list[int]] = mapped_column(ARRAY(SmallInteger), nullable=False)
    at_or_below: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), nullable=False)


class AnalysisCell(Base):
    """Across-unit sums of one metric family per (variant, weight epoch[, bin]), maintained by
    delta from the per-unit rollups (migration 0004, ``abstats.analysis.rollup``)."""

    __tablename__ = "analysis_cell"

    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    family: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    variant_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    bin: Mapped[int] = mapped_column(Integer, primary_key=True)
    sums: Mapped[list[Any]] = mapped_column(ARRAY(Numeric), nullable=False)


class DriftReference(Base):
    """A frozen reference distribution for one drift target: bins and counts, never updated."""

    __tablename__ = "drift_reference"
    __table_args__ = (UniqueConstraint("experiment_id", "target"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiment.id", ondelete="CASCADE"), nullable=False
    )
    target: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # numeric | categorical
    # numeric: inner edges (quantiles); categorical: the top-K categories
    edges: Mapped[list[Any]] = mapped_column(nullable=False, default=list)
    categories: Mapped[list[Any]] = mapped_column(nullable=False, default=list)
    counts: Mapped[list[Any]] = mapped_column(nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = _now()


class DriftState(Base):
    """The latest drift result of one (variant, target) and how many windows in a row flagged it."""

    __tablename__ = "drift_state"

    experiment_id: Mapped[int] = mapped_column(
        ForeignKey("experiment.id", ondelete="CASCADE"), primary_key=True
    )
    variant: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(200), primary_key=True)
    consecutive: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    windows: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_result: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    updated_at: Mapped[datetime] = _now()
