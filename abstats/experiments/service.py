"""Registry use cases: create, read, list and edit experiments; resolve keys for ingestion.

Status and weight changes after creation go through ``abstats.experiments.state.change_state``
(the control domain's endpoints); this module only opens weight epoch 0 at creation and, while an
experiment is a draft, rewrites it when the variants change.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from abstats.config import get_settings
from abstats.db.models import Experiment, Variant, WeightEpoch
from abstats.errors import Conflict, FieldProblem, InvalidInput
from abstats.experiments import repository
from abstats.experiments.integrations import integration_problems
from abstats.experiments.schemas import (
    ExperimentCreate,
    ExperimentList,
    ExperimentRead,
    ExperimentUpdate,
    VariantRead,
    VariantSpec,
    WeightEpochRead,
    raise_problems,
)
from abstats.experiments.state import validate_weights
from abstats.experiments.targets import redact_notifications, redact_router

MAX_PAGE = 100


def declared_weights(variants: list[VariantSpec]) -> dict[str, float]:
    if all(v.weight is None for v in variants):
        return {v.key: 1.0 for v in variants}  # equal shares by default
    return {v.key: float(v.weight or 0.0) for v in variants}


def create_experiment(
    session: Session, body: ExperimentCreate, *, now: datetime | None = None
) -> Experiment:
    """Insert the experiment (draft) and its variants, and open weight epoch 0."""
    now = now or datetime.now(UTC)
    if repository.experiment_key_exists(session, body.key):
        raise Conflict(
            f"An experiment with key {body.key!r} already exists; choose another key or "
            f"PATCH /v1/experiments/{body.key}."
        )
    keys = [v.key for v in body.variants]
    weights = validate_weights(declared_weights(body.variants), keys, field="variants")
    experiment = Experiment(
        key=body.key,
        name=body.name,
        description=body.description,
        status="draft",
        control_variant=body.control,
        salt=secrets.token_hex(16),
        metrics=[m.model_dump(mode="json", exclude_none=True) for m in body.metrics],
        policy=body.policy.model_dump(mode="json"),
        router=body.router.model_dump(mode="json"),
        notifications=body.notifications.model_dump(mode="json", exclude_none=True)
        if body.notifications
        else {},
        metadata_=body.metadata,
        integrations=body.integrations.model_dump(mode="json", exclude_none=True),
        created_at=now,
        updated_at=now,
        variants=[
            Variant(key=v.key, position=i, model_version=v.model_version, metadata_=v.metadata)
            for i, v in enumerate(body.variants)
        ],
    )
    session.add(experiment)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create with the same key won the race
        raise Conflict(f"An experiment with key {body.key!r} already exists.") from exc
    repository.open_epoch(session, experiment.id, weights, at=now, decision_id=None)
    invalidate_refs(body.key)
    return experiment


def update_experiment(
    session: Session, key: str, body: ExperimentUpdate, *, now: datetime | None = None
) -> Experiment:
    now = now or datetime.now(UTC)
    experiment = repository.get_experiment(session, key, for_update=True)
    fields = body.model_fields_set
    nulls = [
        FieldProblem(f, "cannot be null; leave the field out to keep its value")
        for f in sorted(fields)
        if getattr(body, f) is None
    ]
    if nulls:
        raise InvalidInput(f"Invalid update: {nulls[0].field}: {nulls[0].message}", errors=nulls)
    draft_only = body.draft_only_fields
    if draft_only and experiment.status != "draft":
        raise Conflict(
            f"Experiment {key!r} is {experiment.status}: {', '.join(draft_only)} can only be "
            "changed while it is a draft (changing them now would invalidate the data collected "
            "so far). Create a new experiment instead; name, description and metadata can still "
            "be changed."
        )
    if body.name is not None:
        experiment.name = body.name
    if body.description is not None:
        experiment.description = body.description
    if body.metadata is not None:
        experiment.metadata_ = body.metadata
    if body.metrics is not None:
        experiment.metrics = [m.model_dump(mode="json", exclude_none=True) for m in body.metrics]
    if body.variants is not None:
        _replace_variants(session, experiment, body.variants, now=now)
    if body.integrations is not None:
        variant_keys = [v.key for v in (body.variants or experiment.variants)]
        raise_problems("update", integration_problems(body.integrations, variant_keys))
        experiment.integrations = body.integrations.model_dump(mode="json", exclude_none=True)
    if body.control is not None:
        keys = [v.key for v in experiment.variants]
        if body.control not in keys:
            raise InvalidInput(
                f"Invalid update: control: {body.control!r} is not one of the variants",
                errors=[
                    FieldProblem(
                        "control",
                        f"{body.control!r} is not one of the variants ({', '.join(keys)})",
                    )
                ],
            )
        experiment.control_variant = body.control
    elif body.variants is not None and experiment.control_variant not in {
        v.key for v in body.variants
    }:
        raise InvalidInput(
            "Invalid update: the new variants drop the control; set 'control' too",
            errors=[
                FieldProblem(
                    "control",
                    f"the control {experiment.control_variant!r} is not among the new variants; "
                    "send 'control' with one of them",
                )
            ],
        )
    experiment.updated_at = now
    session.flush()
    invalidate_refs(key)
    return experiment


def _replace_variants(
    session: Session, experiment: Experiment, variants: list[VariantSpec], *, now: datetime
) -> None:
    """Upsert variants by key; drop the others unless events already reference them."""
    existing = {v.key: v for v in experiment.variants}
    wanted = {v.key for v in variants}
    dropped = [v for k, v in existing.items() if k not in wanted]
    used = repository.variants_with_events(session, [v.id for v in dropped])
    if used:
        names = sorted(v.key for v in dropped if v.id in used)
        raise Conflict(
            f"Variant(s) {', '.join(names)} already have events and cannot be removed; "
            "keep them in 'variants' (give them weight 0) or create a new experiment."
        )
    for v in dropped:
        experiment.variants.remove(v)
    for position, spec in enumerate(variants):
        row = existing.get(spec.key)
        if row is None:
            row = Variant(key=spec.key)
            experiment.variants.append(row)
        row.position = position
        row.model_version = spec.model_version
        row.metadata_ = spec.metadata
    experiment.variants.sort(key=lambda v: v.position)
    session.flush()
    weights = validate_weights(
        declared_weights(variants), [v.key for v in variants], field="variants"
    )
    epoch = repository.current_epoch(session, experiment.id)
    if epoch is None:
        repository.open_epoch(session, experiment.id, weights, at=now, decision_id=None)
    else:
        repository.update_epoch_weights(session, epoch.id, weights)
        epoch.weights = weights


def to_read(experiment: Experiment, epoch: WeightEpoch | None) -> ExperimentRead:
    weights = {k: float(v) for k, v in (epoch.weights if epoch else {}).items()}
    total = sum(weights.values())
    shares = {k: (w / total if total > 0 else 0.0) for k, w in weights.items()}
    notifications = redact_notifications(experiment.notifications or {})
    return ExperimentRead(
        key=experiment.key,
        name=experiment.name,
        description=experiment.description,
        status=experiment.status,
        control=experiment.control_variant,
        winner=experiment.winner_variant,
        variants=[
            VariantRead(
                key=v.key,
                model_version=v.model_version,
                metadata=v.metadata_,
                weight=weights.get(v.key, 0.0),
                share=shares.get(v.key, 0.0),
                retired=v.retired,
            )
            for v in experiment.variants
        ],
        weights=weights,
        shares=shares,
        weight_epoch=WeightEpochRead(
            epoch=epoch.epoch,
            weights=weights,
            started_at=epoch.started_at,
            decision_id=epoch.decision_id,
        )
        if epoch
        else None,
        metrics=list(experiment.metrics),
        policy=dict(experiment.policy),
        router=redact_router(dict(experiment.router or {})),
        notifications=notifications,
        metadata=experiment.metadata_,
        integrations=dict(experiment.integrations or {}),
        created_at=experiment.created_at,
        updated_at=experiment.updated_at,
        started_at=experiment.started_at,
        ended_at=experiment.ended_at,
    )


def read_experiment(session: Session, key: str) -> ExperimentRead:
    experiment = repository.get_experiment(session, key)
    return to_read(experiment, repository.current_epoch(session, experiment.id))


def list_experiments(
    session: Session, *, limit: int, starting_after: str | None, status: str | None
) -> ExperimentList:
    rows = repository.list_experiments(
        session, limit=limit + 1, starting_after=starting_after, status=status
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    epochs = repository.current_epochs(session, [r.id for r in rows])
    # a page also ends at ABSTATS_MAX_LIST_PAGE_BYTES (at least one experiment per page)
    budget = get_settings().max_list_page_bytes
    data: list[ExperimentRead] = []
    size = 0
    for row in rows:
        item = to_read(row, epochs.get(row.id))
        size += len(item.model_dump_json())
        if data and size > budget:
            has_more = True
            break
        data.append(item)
    return ExperimentList(
        data=data,
        has_more=has_more,
        next_cursor=data[-1].key if has_more and data else None,
    )


# --- key -> id resolution for ingestion (a small in-process cache) -------------------------------
#
# Ingestion resolves experiment and variant keys to integer ids for every event. Entries live
# REFS_TTL_SECONDS; a variant key missing from a cached entry triggers one re-read (a variant may
# have been added to a draft since), and this process's PATCHes invalidate immediately.

REFS_TTL_SECONDS = 30.0
ExperimentRef = tuple[int, dict[str, int]]
_refs: dict[str, tuple[float, ExperimentRef]] = {}
_refs_lock = threading.Lock()


def resolve_refs(
    session: Session, keys: set[str], *, refresh: set[str] | None = None
) -> dict[str, ExperimentRef]:
    """``{key: (experiment_id, {variant_key: variant_id})}`` for the keys that exist."""
    now = time.monotonic()
    found: dict[str, ExperimentRef] = {}
    missing: list[str] = []
    with _refs_lock:
        for key in keys:
            hit = _refs.get(key)
            if (
                hit is not None
                and now - hit[0] < REFS_TTL_SECONDS
                and not (refresh and key in refresh)
            ):
                found[key] = hit[1]
            else:
                missing.append(key)
    if missing:
        loaded = repository.experiment_refs(session, missing)
        with _refs_lock:
            if len(_refs) > 10_000:
                _refs.clear()
            for key, ref in loaded.items():
                _refs[key] = (now, ref)
        found.update(loaded)
    return found


def invalidate_refs(key: str | None = None) -> None:
    with _refs_lock:
        if key is None:
            _refs.clear()
        else:
            _refs.pop(key, None)
