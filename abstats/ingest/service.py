"""Ingestion use cases: a batch of events from ``POST /v1/events`` (or the CLI), and exposures
logged by ``/assign`` (``store_exposures``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import Counter
from sqlalchemy.orm import Session

from abstats.config import Settings, get_settings
from abstats.errors import BadRequest, FieldProblem, InvalidInput, PayloadTooLarge
from abstats.experiments.service import resolve_refs
from abstats.ingest import repository
from abstats.ingest.validate import (
    ExperimentRefs,
    Unparseable,
    ValidatedBatch,
    validate_events,
)

EVENTS = Counter(
    "abstats_events_total", "Events received by POST /v1/events", ["result"]
)  # accepted | duplicate | rejected


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


@dataclass(frozen=True)
class ExposureRecord:
    """One exposure to store: ids already resolved (``/assign`` knows them)."""

    experiment_id: int
    variant_id: int
    unit_id: str
    ts: datetime
    message_id: str


def _loads(data: bytes) -> Any:
    """orjson first; the standard library as a fallback so that ``NaN``, ``Infinity`` and numbers
    beyond double range reach validation and are rejected per field instead of failing the batch.
    Raises ValueError when the text is not JSON at all."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as fast_error:
        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            # RecursionError: nesting past orjson's depth limit is too deep for json too
            raise ValueError(str(fast_error)) from None
        try:  # lone surrogates pass json.loads but cannot be stored
            orjson.dumps(value)
        except orjson.JSONEncodeError as exc:
            raise ValueError(f"invalid Unicode: {exc}") from None
        return value


def parse_events(body: bytes, *, ndjson: bool, settings: Settings) -> list[Any]:
    """The envelope ``{"events": [...]}`` (or one event per line) -> the list of events.

    400 when the body is not that shape, 413 past ``max_batch_events``."""
    limit = settings.max_batch_events
    if ndjson:
        lines = [line for line in body.split(b"\n") if line.strip()]
        if len(lines) > limit:
            raise PayloadTooLarge(
                f"The batch has {len(lines)} events; at most {limit} per request "
                "(ABSTATS_MAX_BATCH_EVENTS). Split it into smaller batches."
            )
        events: list[Any] = []
        for number, line in enumerate(lines, start=1):
            try:
                events.append(_loads(line))
            except ValueError as exc:
                events.append(Unparseable(f"line {number} is not valid JSON: {exc}"))
        return events
    if not body.strip():
        raise BadRequest('The body is empty; send {"events": [...]}.')
    try:
        envelope = _loads(body)
    except ValueError as exc:
        raise BadRequest(
            f'The body is not valid JSON ({exc}); send {{"events": [...]}} or, with '
            "Content-Type: application/x-ndjson, one event per line."
        ) from None
    if not isinstance(envelope, dict) or "events" not in envelope:
        raise BadRequest(
            'The body must be a JSON object {"events": [...]}, got '
            + ("an object without 'events'" if isinstance(envelope, dict) else "something else")
            + "."
        )
    extra = sorted(k for k in envelope if k != "events")
    if extra:
        raise BadRequest(
            f'Unknown top-level field(s) {", ".join(extra)}: the body is {{"events": [...]}}.'
        )
    events = envelope["events"]
    if not isinstance(events, list):
        raise BadRequest("'events' must be an array of event objects.")
    if len(events) > limit:
        raise PayloadTooLarge(
            f"The batch has {len(events)} events; at most {limit} per request "
            "(ABSTATS_MAX_BATCH_EVENTS). Split it into smaller batches."
        )
    return events


def _resolver(session: Session) -> Any:
    def resolve(keys: set[str], refresh: set[str] | None) -> ExperimentRefs:
        return resolve_refs(session, keys, refresh=refresh)

    return resolve


def _write(
    session: Session, table: repository.EventTable, rows: Sequence[Any], stamped: str | None
) -> int:
    """Rows whose ``ts`` the server chose (``stamped``) are claimed by message id, since a resend
    gets another ``ts``; the others are keyed by ``(message_id, ts)`` (``repository``)."""
    if stamped is None:
        return repository.copy_insert(session, table, rows)
    at = table.columns.index("ts")
    own = [r for r in rows if r[at] != stamped]
    server = [r for r in rows if r[at] == stamped] if len(own) < len(rows) else []
    return repository.copy_insert(session, table, own) + repository.copy_insert(
        session, table, server, claim=True
    )


def store_batch(session: Session, batch: ValidatedBatch) -> int:
    """Write the validated rows; returns how many were new (the rest are duplicates)."""
    inserted = 0
    inserted += _write(session, repository.EXPOSURE, batch.exposures, batch.stamped)
    inserted += _write(session, repository.PREDICTION, batch.predictions, batch.stamped)
    inserted += _write(session, repository.OUTCOME, batch.outcomes, batch.stamped)
    return inserted


def ingest_events(
    session: Session,
    events: Sequence[Any],
    *,
    strict: bool = False,
    settings: Settings | None = None,
) -> IngestResult:
    """Validate and store a batch in the caller's transaction (the caller commits).

    ``strict``: any invalid event fails the whole batch with 422 and nothing is stored."""
    settings = settings or get_settings()
    batch = validate_events(events, resolve=_resolver(session), settings=settings)
    rejected = [r.as_dict() for r in batch.rejected]
    if strict and rejected:
        first = batch.rejected[0]
        raise InvalidInput(
            f"{batch.rejected_events} of {len(events)} events are invalid, so nothing was "
            f"stored (strict mode). First: {first.field}: {first.message}",
            errors=[FieldProblem(r.field, r.message) for r in batch.rejected],
            extra={"rejected": rejected},
        )
    inserted = store_batch(session, batch)
    duplicates = batch.valid_events - inserted
    EVENTS.labels("accepted").inc(inserted)
    EVENTS.labels("duplicate").inc(duplicates)
    EVENTS.labels("rejected").inc(batch.rejected_events)
    return IngestResult(accepted=inserted, duplicates=duplicates, rejected=rejected)


def store_exposures(
    session: Session, exposures: Sequence[ExposureRecord], *, source: str = "assign"
) -> int:
    """Bulk-write exposures whose ids are already resolved (the ``/assign`` batcher); idempotent
    on ``(experiment_id, message_id)`` whatever the timestamp (``/assign`` logs one exposure per
    unit and weight epoch under one message id), so they are claimed in ``event_message``.
    Returns how many were new. The caller commits."""
    rows = []
    for e in exposures:
        if not e.unit_id or not e.message_id:
            raise ValueError("store_exposures: unit_id and message_id must be non-empty strings")
        ts = e.ts if e.ts.tzinfo is not None else e.ts.replace(tzinfo=UTC)
        rows.append(
            (e.experiment_id, e.variant_id, e.unit_id, ts.isoformat(), e.message_id, source)
        )
    return repository.copy_insert(session, repository.EXPOSURE, rows, claim=True)
