"""REST: lifecycle and manual control, the policy, the decision audit trail, and ``/assign``."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from abstats.control import service, whatif
from abstats.control.assign import assign, config_cache
from abstats.control.exposures import ExposureLogger
from abstats.db.engine import get_engine
from abstats.db.models import Decision
from abstats.deps import AdminKey, ReadKey, SessionDep, check_scope, request_principal
from abstats.errors import FieldProblem, InvalidInput
from abstats.keys import Principal
from abstats.keys import clear_cache as clear_key_cache

router = APIRouter(prefix="/v1/experiments", tags=["control"])

MAX_UNIT_ID = 256
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(
        default=None, max_length=2000, description="Why; kept on the decision."
    )


class WeightsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weights: dict[str, Any] = Field(description='Variant -> weight, e.g. {"v1": 25, "v2": 75}.')
    reason: str | None = Field(default=None, max_length=2000)


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variant: str = Field(description="The variant that gets all traffic.")
    reason: str | None = Field(default=None, max_length=2000)


class DecisionRead(BaseModel):
    id: int
    action: str
    actor: str
    reason: str
    applied: bool
    status_before: str | None
    status_after: str | None
    weights_before: dict[str, Any] | None
    weights_after: dict[str, Any] | None
    snapshot_id: int | None
    evidence: dict[str, Any]
    router_result: dict[str, Any] | None
    created_at: str

    @classmethod
    def of(cls, d: Decision) -> DecisionRead:
        return cls(
            id=d.id,
            action=d.action,
            actor=d.actor,
            reason=d.reason,
            applied=d.applied,
            status_before=d.status_before,
            status_after=d.status_after,
            weights_before=d.weights_before,
            weights_after=d.weights_after,
            snapshot_id=d.snapshot_id,
            evidence=d.evidence,
            router_result=d.router_result,
            created_at=d.created_at.isoformat(),
        )


class DecisionList(BaseModel):
    data: list[DecisionRead]
    has_more: bool
    next_cursor: int | None


def _reason(body: ReasonBody | None) -> str | None:
    return body.reason if body is not None else None


@router.post("/{key}/start", response_model=DecisionRead)
def start(
    principal: AdminKey, session: SessionDep, key: str, body: ReasonBody | None = None
) -> DecisionRead:
    """draft -> running; with a ramp the candidates start at the first step."""
    return DecisionRead.of(service.start(session, key, actor=principal.actor, reason=_reason(body)))


@router.post("/{key}/pause", response_model=DecisionRead)
def pause(
    principal: AdminKey, session: SessionDep, key: str, body: ReasonBody | None = None
) -> DecisionRead:
    """running -> paused: /assign answers the control, the router gets control 100%."""
    return DecisionRead.of(service.pause(session, key, actor=principal.actor, reason=_reason(body)))


@router.post("/{key}/resume", response_model=DecisionRead)
def resume(
    principal: AdminKey, session: SessionDep, key: str, body: ReasonBody | None = None
) -> DecisionRead:
    return DecisionRead.of(
        service.resume(session, key, actor=principal.actor, reason=_reason(body))
    )


@router.put("/{key}/weights", response_model=DecisionRead)
def put_weights(
    principal: AdminKey, session: SessionDep, key: str, body: WeightsBody
) -> DecisionRead:
    """Manual reweight (a new weight epoch); the ramp continues from the nearest step."""
    return DecisionRead.of(
        service.set_weights(session, key, body.weights, actor=principal.actor, reason=body.reason)
    )


@router.post("/{key}/promote", response_model=DecisionRead)
def promote(principal: AdminKey, session: SessionDep, key: str, body: PromoteBody) -> DecisionRead:
    return DecisionRead.of(
        service.promote(session, key, body.variant, actor=principal.actor, reason=body.reason)
    )


@router.post("/{key}/rollback", response_model=DecisionRead)
def rollback(
    principal: AdminKey, session: SessionDep, key: str, body: ReasonBody | None = None
) -> DecisionRead:
    return DecisionRead.of(
        service.rollback(session, key, actor=principal.actor, reason=_reason(body))
    )


@router.get("/{key}/policy")
def get_policy(_: ReadKey, session: SessionDep, key: str) -> dict[str, Any]:
    return service.get_policy(session, key)


@router.put("/{key}/policy")
def put_policy(
    _: AdminKey, session: SessionDep, key: str, body: Annotated[Any, Body()]
) -> dict[str, Any]:
    """Replace the auto-promotion rules (README, section Policy); 422 lists each invalid field."""
    return service.put_policy(session, key, body)


@router.post("/{key}/policy/dry-run")
def policy_dry_run(
    _: ReadKey, session: SessionDep, key: str, body: Annotated[Any, Body()]
) -> dict[str, Any]:
    """What this policy (the body, not saved) would decide on the latest snapshot, for the
    experiment as it is now. Read scope: nothing is written. 422 lists each invalid field."""
    return whatif.dry_run(session, key, body).as_dict()


@router.post("/{key}/policy/replay")
def policy_replay(
    _: ReadKey, session: SessionDep, key: str, body: Annotated[Any, Body()]
) -> dict[str, Any]:
    """The decisions this policy (the body, not saved) would have made over every snapshot of
    the experiment, oldest first, from its start, and when. Read scope: nothing is written."""
    return whatif.replay(session, key, body).as_dict()


@router.get("/{key}/decisions", response_model=DecisionList)
def list_decisions(
    _: ReadKey,
    session: SessionDep,
    key: str,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    starting_after: Annotated[
        int | None, Query(description="next_cursor of the previous page")
    ] = None,
) -> DecisionList:
    """The audit trail, newest first."""
    rows, has_more = service.list_decisions(
        session, key, limit=limit, starting_after=starting_after
    )
    return DecisionList(
        data=[DecisionRead.of(d) for d in rows],
        has_more=has_more,
        next_cursor=rows[-1].id if has_more and rows else None,
    )


# --- /assign: the hot path ----------------------------------------------------------------------
#
# Async and free of per-request database work: the API key and the experiment config come from
# short in-process caches (a miss is loaded in the thread pool), and the exposure is one append to
# the ExposureLogger's buffer (written by its writer process).

_exposure_logger: ExposureLogger | None = None
_logger_lock = threading.Lock()


def exposure_logger() -> ExposureLogger:
    """The process's exposure logger (``create_app`` drains it at shutdown)."""
    global _exposure_logger
    logger = _exposure_logger
    if logger is not None:  # the hot path: no lock
        return logger
    with _logger_lock:
        if _exposure_logger is None:
            _exposure_logger = ExposureLogger(get_engine)
        return _exposure_logger


def stop_exposure_logger() -> None:
    """App shutdown: drain the buffer into the database, then stop the writer process."""
    global _exposure_logger
    with _logger_lock:
        if _exposure_logger is not None:
            _exposure_logger.stop()
            _exposure_logger = None


async def _ingest_principal(request: Request) -> Principal:
    return check_scope(await request_principal(request), "ingest")


# The parameters are read from the request directly rather than declared in the signature:
# FastAPI's per-request parameter validation was a tenth of this route's cost (bench_assign).
# ``openapi_extra`` documents them as if declared.
_ASSIGN_PARAMETERS: dict[str, Any] = {
    "parameters": [
        {
            "name": "key",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "The experiment key.",
        },
        {
            "name": "unit_id",
            "in": "query",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_UNIT_ID},
            "description": "The randomization unit, e.g. a user id.",
        },
        {
            "name": "X-Target-Variant",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "Force this variant (not logged as an exposure).",
        },
    ]
}


class _Answer(Response):
    """A 200 with a JSON body rendered before the request (``AssignmentConfig.answer_body``):
    starlette's ``Response`` minus its per-request rendering and header building."""

    media_type = "application/json"

    def __init__(self, body: bytes) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ]


def _query_value(query_string: bytes, name: str) -> str | None:
    """``request.query_params.get(name)`` (the last value wins) without building the multidict."""
    value = None
    for key, item in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key == name:
            value = item
    return value


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """``request.headers.get(name)`` for a lowercase ``name`` (ASGI header names are lowercase)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


@router.get("/{key}/assign", openapi_extra=_ASSIGN_PARAMETERS)
async def assign_unit(request: Request) -> Response:
    """Sticky weighted assignment of ``unit_id`` -> {variant, model_version, weights_epoch}."""
    await _ingest_principal(request)
    scope = request.scope
    key: str = scope["path_params"]["key"]
    unit_id = _query_value(scope["query_string"], "unit_id")
    x_target_variant = _header(scope, b"x-target-variant")
    if unit_id is None or not unit_id.strip():
        raise InvalidInput(
            "unit_id is required: GET /v1/experiments/{key}/assign?unit_id=<user or device id>",
            errors=[FieldProblem("unit_id", "required, a non-empty string")],
        )
    if _CONTROL_CHARACTERS.search(unit_id):
        raise InvalidInput(
            "unit_id must not contain control characters (NUL, newline, ...).",
            errors=[FieldProblem("unit_id", "must not contain control characters")],
        )
    if len(unit_id) > MAX_UNIT_ID:
        raise InvalidInput(
            f"unit_id is {len(unit_id)} characters; at most {MAX_UNIT_ID} are allowed.",
            errors=[FieldProblem("unit_id", f"at most {MAX_UNIT_ID} characters")],
        )
    config = await config_cache.get(key)
    if x_target_variant is not None and x_target_variant not in config.variant_ids:
        known = ", ".join(config.variant_ids)
        raise InvalidInput(
            f"X-Target-Variant {x_target_variant!r} is not a variant of {key!r}; known: {known}.",
            errors=[FieldProblem("X-Target-Variant", f"must be one of {known}")],
        )
    logger = exposure_logger() if config.randomizing and x_target_variant is None else None
    result = assign(
        config, unit_id, target_variant=x_target_variant, log=logger.log if logger else None
    )
    return _Answer(config.answer_body(result))


def clear_caches() -> None:
    """Tests: forget cached principals and configs."""
    clear_key_cache()
    config_cache.invalidate()
