"""REST: ``/v1/experiments`` (create, list, get, patch) and ``/v1/keys`` (admin).

Bodies are taken as JSON and validated by ``schemas.parse_*`` so that every problem, including
unknown fields and rules spanning fields, comes back with its field path.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response

from abstats import keys as key_service
from abstats.db.models import EXPERIMENT_STATUSES
from abstats.deps import AdminKey, ReadKey, SessionDep
from abstats.errors import FieldProblem, InvalidInput
from abstats.experiments import repository, service
from abstats.experiments.schemas import (
    ExperimentCreate,
    ExperimentList,
    ExperimentRead,
    ExperimentUpdate,
    KeyCreate,
    KeyCreated,
    parse_create,
    parse_update,
)

router = APIRouter(prefix="/v1", tags=["experiments"])


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` inlined: in the OpenAPI document a ``#/$defs/..``
    reference would resolve against the document root, where there is no ``$defs``."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return resolve({**defs[ref.removeprefix("#/$defs/")], **rest})
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _body_schema(model: type[Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_defs(model.model_json_schema())}},
        }
    }


@router.post(
    "/experiments",
    status_code=201,
    response_model=ExperimentRead,
    openapi_extra=_body_schema(ExperimentCreate),
)
def create_experiment(
    _: AdminKey, session: SessionDep, response: Response, body: Annotated[Any, Body()]
) -> ExperimentRead:
    """Register an experiment as a draft; weight epoch 0 holds the declared (or equal) weights."""
    experiment = service.create_experiment(session, parse_create(body))
    response.headers["Location"] = f"/v1/experiments/{experiment.key}"
    return service.to_read(experiment, repository.current_epoch(session, experiment.id))


@router.get("/experiments", response_model=ExperimentList)
def list_experiments(
    _: ReadKey,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 20,
    starting_after: Annotated[
        str | None, Query(description="next_cursor of the previous page")
    ] = None,
    status: Annotated[str | None, Query(description="only experiments in this status")] = None,
) -> ExperimentList:
    if status is not None and status not in EXPERIMENT_STATUSES:
        raise InvalidInput(
            f"status must be one of {', '.join(EXPERIMENT_STATUSES)}",
            errors=[FieldProblem("status", f"must be one of {', '.join(EXPERIMENT_STATUSES)}")],
        )
    return service.list_experiments(
        session, limit=limit, starting_after=starting_after, status=status
    )


@router.get("/experiments/{key}", response_model=ExperimentRead)
def get_experiment(_: ReadKey, session: SessionDep, key: str) -> ExperimentRead:
    return service.read_experiment(session, key)


@router.patch(
    "/experiments/{key}",
    response_model=ExperimentRead,
    openapi_extra=_body_schema(ExperimentUpdate),
)
def patch_experiment(
    _: AdminKey, session: SessionDep, key: str, body: Annotated[Any, Body()]
) -> ExperimentRead:
    """Name, description and metadata at any time; metrics, variants and control while draft."""
    experiment = service.update_experiment(session, key, parse_update(body))
    return service.to_read(experiment, repository.current_epoch(session, experiment.id))


@router.post("/keys", status_code=201, response_model=KeyCreated)
def create_key(principal: AdminKey, session: SessionDep, body: KeyCreate) -> KeyCreated:
    """Create an API key; the secret is in this response only (a hash is stored)."""
    new = key_service.create_key(session, scope=body.scope, name=body.name, actor=principal.actor)
    return KeyCreated(id=new.id, scope=new.scope, name=new.name, secret=new.secret)


@router.delete("/keys/{key_id}", status_code=204)
def revoke_key(principal: AdminKey, session: SessionDep, key_id: str) -> Response:
    """Revoke a key. Other API processes stop accepting it within the auth cache time (10 s)."""
    key_service.revoke_key(session, key_id, actor=principal.actor)
    return Response(status_code=204)
