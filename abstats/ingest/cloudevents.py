"""Inference-logger CloudEvents -> predictions (``POST /v1/cloudevents``).

Model servers log each inference as two CloudEvents over HTTP: KServe's logger sends the request
(type ``org.kubeflow.serving.inference.request``, data = the request body) and the response
(``...inference.response``, data = the response body) with the same ``ce-id``, in binary mode
(``ce-*`` headers, the body as sent) with the extensions ``inferenceservicename``, ``namespace``,
``component``, ``endpoint`` and ``metadata`` (the request headers listed in ``metadataHeaders``).
Structured mode (``application/cloudevents+json``, one event) and batches
(``application/cloudevents-batch+json``) are accepted too. Parsing is the CloudEvents SDK's.

The endpoint is mapped to an (experiment, variant) by the ``integrations.cloudevents.sources`` of
the running or paused experiments (``abstats.experiments.integrations``). The two halves are
paired in ``cloudevent_pair``: each half is an upsert on ``(experiment_id, event_id)``, so the
half that arrives second (even concurrently, on another replica) sees the first one in the row it
locked. Once both are there the prediction is written through the ordinary ingest path
(``ingest_events``: validation, COPY, ``message_id`` idempotency) with ``message_id`` =
``ce:<ce-id>``, timestamp = the request's time, latency = response time - request time, score =
the number at ``score_pointer`` in the response. The pair row is deleted in the same transaction,
so ``cloudevent_pair`` holds only halves in flight; :func:`prune_pairs` (the scheduler, hourly)
drops halves whose other half never came after ``PAIR_TTL`` (a request without a response stores
nothing). A resent pair is paired again and writes the same message id: stored once, counted as a
duplicate; a resent half alone waits as pending and is pruned.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from pydantic import ValidationError
from sqlalchemy import Connection, delete, select, text
from sqlalchemy.orm import Session

from abstats.config import Settings, get_settings
from abstats.db.models import CloudEventPair, Experiment
from abstats.errors import BadRequest, FieldProblem, InvalidInput, PayloadTooLarge
from abstats.experiments.integrations import CloudEventsIntegration
from abstats.ingest.service import ingest_events

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
DEFAULT_SCORE_POINTERS = ("/predictions/0", "/outputs/0/data/0")
ACTIVE = ("running", "paused")
PAIR_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class Mapping:
    experiment_id: int
    experiment: str
    variant: str
    config: CloudEventsIntegration


def parse_http(headers: dict[str, str], body: bytes, settings: Settings) -> list[BaseCloudEvent]:
    """The CloudEvent(s) of one HTTP request: binary, structured or batch mode."""
    headers = {k.lower(): v for k, v in headers.items()}
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    hint = (
        "Send a CloudEvent in binary mode (headers ce-id, ce-type, ce-source, ce-specversion; "
        f"the body is the data) or structured mode (Content-Type: {STRUCTURED})"
    )
    try:
        if content_type == BATCH:
            items = orjson.loads(body)
            if not isinstance(items, list):
                raise BadRequest(f"A {BATCH} body must be a JSON array of CloudEvents.")
            if len(items) > settings.max_batch_events:
                raise PayloadTooLarge(
                    f"The batch has {len(items)} CloudEvents; at most "
                    f"{settings.max_batch_events} (ABSTATS_MAX_BATCH_EVENTS)."
                )
            return [
                from_http_event(
                    HTTPMessage({"content-type": STRUCTURED}, orjson.dumps(item)), JSONFormat()
                )
                for item in items
            ]
        if content_type != STRUCTURED and "ce-specversion" not in headers:
            raise BadRequest(f"This is not a CloudEvent (no ce-specversion header). {hint}.")
        return [from_http_event(HTTPMessage(headers, body), JSONFormat())]
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON ({exc}). {hint}.") from None
    except BaseCloudEventException as exc:
        raise BadRequest(f"Invalid CloudEvent: {exc}. {hint}.") from None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        # the SDK's own parsing of a broken body (e.g. a structured body that is not an object)
        raise BadRequest(f"Invalid CloudEvent: {exc}. {hint}.") from None


def find_mapping(session: Session, attributes: dict[str, Any]) -> Mapping:
    """The (experiment, variant) of the running or paused experiment whose sources match."""
    rows = session.execute(
        select(Experiment.id, Experiment.key, Experiment.integrations).where(
            Experiment.status.in_(ACTIVE), text("experiment.integrations ? 'cloudevents'")
        )
    ).all()
    found: list[Mapping] = []
    for experiment_id, key, integrations in rows:
        try:
            config = CloudEventsIntegration.model_validate(integrations["cloudevents"])
        except ValidationError:
            continue  # validated on write; an unreadable config maps nothing
        for source in config.sources:
            if source.matches(attributes):
                found.append(Mapping(experiment_id, key, source.variant, config))
                break
    described = ", ".join(
        f"{name}={attributes.get(attr)!r}"
        for name, attr in (
            ("inferenceservice", "inferenceservicename"),
            ("namespace", "namespace"),
            ("component", "component"),
            ("endpoint", "endpoint"),
        )
    )
    if not found:
        raise InvalidInput(
            f"No running or paused experiment maps this endpoint ({described}): add a source to "
            "its integrations.cloudevents.sources, e.g. "
            '{"inferenceservice": "churn", "endpoint": "canary", "variant": "v2"}.',
            errors=[FieldProblem("ce-inferenceservicename", "matches no source")],
        )
    if len(found) > 1:
        keys = ", ".join(m.experiment for m in found)
        raise InvalidInput(
            f"The endpoint ({described}) matches the sources of several active experiments "
            f"({keys}); make their sources distinct (e.g. add endpoint or component).",
            errors=[FieldProblem("ce-inferenceservicename", "matches several experiments")],
        )
    return found[0]


def _pointer(document: Any, pointer: str) -> Any:
    """RFC 6901: ``/outputs/0/data/0``; None when the path does not exist."""
    node = document
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _number(value: Any) -> float | None:
    if isinstance(value, list) and value:  # class probabilities: the positive (last) class
        value = value[-1]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _json_data(event: BaseCloudEvent) -> Any:
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
    return data


def score_of(response: Any, config: CloudEventsIntegration) -> float | None:
    pointers = (config.score_pointer,) if config.score_pointer else DEFAULT_SCORE_POINTERS
    for pointer in pointers:
        found = _number(_pointer(response, pointer))
        if found is not None:
            return found
    return None


def unit_of(attributes: dict[str, Any], config: CloudEventsIntegration) -> str | None:
    """The unit from the logged request headers (extension ``metadata``: a JSON object of header
    name -> [values]); None when the header is not configured."""
    if config.unit_header is None:
        return None
    header = config.unit_header.lower()
    raw = attributes.get("metadata")
    try:
        metadata = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError:
        metadata = None
    if isinstance(metadata, dict):
        for name, value in metadata.items():
            if str(name).lower() == header:
                values = value if isinstance(value, list) else [value]
                if values and str(values[0]).strip():
                    return str(values[0]).strip()
    raise InvalidInput(
        f"The CloudEvent carries no {config.unit_header!r} header in its metadata extension, "
        "which integrations.cloudevents.unit_header names as the unit: list it in the KServe "
        f"logger's metadataHeaders and send it with every request.",
        errors=[FieldProblem("ce-metadata", f"no {config.unit_header} header")],
    )


def message_id(event_id: str) -> str:
    candidate = f"ce:{event_id}"
    if len(candidate) <= 200:
        return candidate
    return "ce:sha256:" + hashlib.sha256(event_id.encode()).hexdigest()


_UPSERT_REQUEST = text(
    """
    INSERT INTO cloudevent_pair (experiment_id, event_id, variant, unit_id, request_at)
    VALUES (:experiment_id, :event_id, :variant, :unit_id, :at)
    ON CONFLICT (experiment_id, event_id) DO UPDATE SET
      request_at = coalesce(cloudevent_pair.request_at, EXCLUDED.request_at),
      unit_id = coalesce(cloudevent_pair.unit_id, EXCLUDED.unit_id)
    RETURNING variant, unit_id, request_at, response_at, responded, score, error
    """
)
_UPSERT_RESPONSE = text(
    """
    INSERT INTO cloudevent_pair
      (experiment_id, event_id, variant, unit_id, response_at, responded, score, error)
    VALUES (:experiment_id, :event_id, :variant, :unit_id, :at, true, :score, :error)
    ON CONFLICT (experiment_id, event_id) DO UPDATE SET
      response_at = coalesce(cloudevent_pair.response_at, EXCLUDED.response_at),
      responded = true,
      score = coalesce(cloudevent_pair.score, EXCLUDED.score),
      error = cloudevent_pair.error OR EXCLUDED.error,
      unit_id = coalesce(cloudevent_pair.unit_id, EXCLUDED.unit_id)
    RETURNING variant, unit_id, request_at, response_at, responded, score, error
    """
)


@dataclass
class CloudEventResult:
    accepted: int = 0
    duplicates: int = 0
    pending: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "pending": self.pending}


def ingest_cloudevents(
    session: Session, events: list[BaseCloudEvent], *, settings: Settings | None = None
) -> CloudEventResult:
    """Pair and store the events in the caller's transaction (the caller commits). Raises on the
    first event that cannot be taken (the whole request is then rolled back: the sender retries
    it as a whole, and what was already stored comes back as duplicates)."""
    settings = settings or get_settings()
    result = CloudEventResult()
    for index, event in enumerate(events):
        attributes = event.get_attributes()
        kind = attributes.get("type")
        if kind not in (REQUEST_TYPE, RESPONSE_TYPE):
            raise InvalidInput(
                f"CloudEvent {index}: type {kind!r} is not an inference event; abstats takes "
                f"{REQUEST_TYPE!r} and {RESPONSE_TYPE!r} (the KServe inference logger's).",
                errors=[FieldProblem("ce-type", f"expected {REQUEST_TYPE} or {RESPONSE_TYPE}")],
            )
        event_id = str(attributes["id"])
        if len(event_id) > 1000:
            raise InvalidInput(
                "The CloudEvent id is longer than 1000 characters.",
                errors=[FieldProblem("ce-id", "at most 1000 characters")],
            )
        mapping = find_mapping(session, attributes)
        at = attributes.get("time") or datetime.now(UTC)
        params: dict[str, Any] = {
            "experiment_id": mapping.experiment_id,
            "event_id": event_id,
            "variant": mapping.variant,
            "unit_id": unit_of(attributes, mapping.config),
            "at": at,
        }
        if kind == REQUEST_TYPE:
            row = session.execute(_UPSERT_REQUEST, params).mappings().one()
        else:
            data = _json_data(event)
            params["score"] = score_of(data, mapping.config)
            params["error"] = isinstance(data, dict) and "error" in data
            row = session.execute(_UPSERT_RESPONSE, params).mappings().one()
        complete = row["responded"] and (
            row["request_at"] is not None or mapping.config.pairing == "response"
        )
        if not complete:
            result.pending += 1
            continue
        prediction: dict[str, Any] = {
            "type": "prediction",
            "message_id": message_id(event_id),
            "experiment": mapping.experiment,
            "variant": row["variant"],
            "unit_id": row["unit_id"] or event_id[:256],
            "request_id": event_id[:256],
            "timestamp": (row["request_at"] or row["response_at"]).isoformat(),
            "error": bool(row["error"]),
        }
        if row["score"] is not None:
            prediction["score"] = row["score"]
        if row["request_at"] is not None and row["response_at"] is not None:
            latency = (row["response_at"] - row["request_at"]).total_seconds() * 1000
            if latency >= 0:
                prediction["latency_ms"] = latency
        stored = ingest_events(session, [prediction], strict=True, settings=settings)
        session.execute(
            delete(CloudEventPair).where(
                CloudEventPair.experiment_id == mapping.experiment_id,
                CloudEventPair.event_id == event_id,
            )
        )
        result.accepted += stored.accepted
        result.duplicates += stored.duplicates
    return result


def prune_pairs(conn: Connection, *, now: datetime | None = None) -> int:
    """Drop halves that waited longer than ``PAIR_TTL`` for the other one; returns how many."""
    cutoff = (now or datetime.now(UTC)) - PAIR_TTL
    removed = conn.execute(delete(CloudEventPair).where(CloudEventPair.created_at < cutoff))
    return int(removed.rowcount or 0)
