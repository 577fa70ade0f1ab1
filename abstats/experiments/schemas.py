"""Request and response shapes of the registry (``XCreate / XUpdate / XRead / XList``).

Create and update bodies reject unknown fields (a typo such as ``varaints`` must not be silently
dropped); rules that span fields (one control among the variants, unique keys, a primary metric)
are checked here so every violation is reported with its field path.
"""

from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any, Literal, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from abstats.config import Settings, get_settings
from abstats.engine.specs import NAME_PATTERN, MetricSpec, Policy
from abstats.errors import FieldProblem, InvalidInput
from abstats.experiments.integrations import Integrations, integration_problems
from abstats.experiments.specs import RouterSpec
from abstats.experiments.targets import notification_problems, router_problems

EXPERIMENT_KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def unknown_field_problems(
    values: dict[str, Any], allowed: set[str], hints: dict[str, str]
) -> list[FieldProblem]:
    """One problem per field the body does not have, with a pointer or a 'did you mean'."""
    problems = []
    for name in values:
        if name in allowed:
            continue
        if name in hints:
            problems.append(FieldProblem(str(name), hints[name]))
            continue
        close = difflib.get_close_matches(str(name), sorted(allowed), n=1)
        suggestion = f"did you mean '{close[0]}'? " if close else ""
        problems.append(
            FieldProblem(
                str(name), f"unknown field; {suggestion}allowed: {', '.join(sorted(allowed))}"
            )
        )
    return problems


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (``X``, ``X | None``, ``list[X]``, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names allowed at ``loc`` inside ``model`` (empty when it cannot tell)."""
    candidates = [model]
    for part in loc:
        if isinstance(part, int):
            continue  # a list index: the annotation's models already are the items'
        candidates = [
            inner
            for current in candidates
            if (info := current.model_fields.get(part)) is not None
            for inner in _models_in(info.annotation)
        ]
    return sorted({info.alias or name for m in candidates for name, info in m.model_fields.items()})


def validation_problems(
    exc: ValidationError, model: type[BaseModel] | None = None
) -> list[FieldProblem]:
    """Pydantic errors as field paths (``variants[1].weight``) and plain messages; with the
    validated ``model``, an unknown nested field gets a "did you mean" and the allowed fields."""
    problems = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
            allowed = _fields_at(model, tuple(err["loc"][:-1])) if model else []
            if allowed:
                close = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
                suggestion = f"did you mean '{close[0]}'? " if close else ""
                message = f"unknown field; {suggestion}allowed: {', '.join(allowed)}"
        problems.append(FieldProblem(path or "body", message))
    return problems


def raise_problems(what: str, problems: list[FieldProblem]) -> None:
    if problems:
        first = problems[0]
        more = (
            f" (and {len(problems) - 1} more problem(s), see errors)" if len(problems) > 1 else ""
        )
        raise InvalidInput(f"Invalid {what}: {first.field}: {first.message}{more}", errors=problems)


class VariantSpec(BaseModel):
    """One model version behind the experiment's endpoint."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=NAME_PATTERN, description="Variant key, e.g. 'v2'.")
    model_version: str = Field(default="", max_length=200)
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Artifact URI, framework, training data ref, config."
    )
    weight: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Traffic weight (share = weight / sum). Give it for every variant or none.",
    )


class NotificationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook_url: str | None = Field(default=None, pattern=r"^https?://", max_length=2000)
    secret: str | None = Field(default=None, max_length=500)


def variant_and_metric_problems(
    control: str | None, variants: list[VariantSpec] | None, metrics: list[MetricSpec] | None
) -> list[FieldProblem]:
    """Rules that span fields: unique keys, one control among >= 2 variants, weights for all or
    none, at least one primary metric with a direction."""
    problems: list[FieldProblem] = []
    if variants is not None:
        keys = [v.key for v in variants]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                problems.append(
                    FieldProblem(f"variants[{i}].key", f"duplicate variant key {key!r}")
                )
        if len(variants) < 2:
            problems.append(
                FieldProblem(
                    "variants",
                    "an experiment needs at least two variants (the control and a candidate)",
                )
            )
        if control is not None and control not in keys:
            problems.append(
                FieldProblem(
                    "control", f"{control!r} is not one of the variants ({', '.join(keys)})"
                )
            )
        missing = [i for i, v in enumerate(variants) if v.weight is None]
        if missing and len(missing) != len(variants):
            for i in missing:
                problems.append(
                    FieldProblem(
                        f"variants[{i}].weight",
                        "give a weight for every variant or for none (equal weights)",
                    )
                )
        elif not missing and sum(v.weight or 0.0 for v in variants) <= 0:
            problems.append(FieldProblem("variants", "at least one weight must be positive"))
    if metrics is not None:
        keys = [m.key for m in metrics]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                problems.append(FieldProblem(f"metrics[{i}].key", f"duplicate metric key {key!r}"))
        if not any(m.role == "primary" for m in metrics):
            problems.append(
                FieldProblem(
                    "metrics",
                    "at least one metric needs role 'primary' (the metric a promotion is decided "
                    'on), e.g. {"key": "conversion", "kind": "proportion", "outcome": "converted", '
                    '"role": "primary", "direction": "increase"}',
                )
            )
        for i, m in enumerate(metrics):
            if m.role == "primary" and m.effective_direction is None:
                problems.append(
                    FieldProblem(
                        f"metrics[{i}].direction",
                        "a primary metric needs a direction: 'increase' or 'decrease' is good",
                    )
                )
    return problems


def _json_size(value: Any) -> int:
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return len(str(value).encode())


def size_problems(
    variants: list[VariantSpec] | None,
    metrics: list[MetricSpec] | None,
    metadata: dict[str, Any] | None,
    settings: Settings,
) -> list[FieldProblem]:
    """The operator's caps on what an admin may define (README, section Security)."""
    problems: list[FieldProblem] = []
    limit = settings.max_metadata_bytes
    if metadata is not None and _json_size(metadata) > limit:
        problems.append(
            FieldProblem("metadata", f"is larger than {limit} bytes (ABSTATS_MAX_METADATA_BYTES)")
        )
    if variants is not None:
        if len(variants) > settings.max_variants:
            problems.append(
                FieldProblem(
                    "variants",
                    f"{len(variants)} variants; at most {settings.max_variants} "
                    "(ABSTATS_MAX_VARIANTS)",
                )
            )
        for i, variant in enumerate(variants):
            if _json_size(variant.metadata) > limit:
                problems.append(
                    FieldProblem(
                        f"variants[{i}].metadata",
                        f"is larger than {limit} bytes (ABSTATS_MAX_METADATA_BYTES)",
                    )
                )
    if metrics is not None and len(metrics) > settings.max_metrics:
        problems.append(
            FieldProblem(
                "metrics",
                f"{len(metrics)} metrics; at most {settings.max_metrics} (ABSTATS_MAX_METRICS)",
            )
        )
    return problems


def policy_problems(policy: Policy, metrics: list[MetricSpec], arms: int) -> list[FieldProblem]:
    """What a policy cannot do with these metrics and this many variants, or beyond the
    operator's caps."""
    settings = get_settings()
    problems: list[FieldProblem] = []
    if policy.ramp is not None and len(policy.ramp.steps) > settings.max_ramp_steps:
        problems.append(
            FieldProblem(
                "policy.ramp.steps",
                f"{len(policy.ramp.steps)} steps; at most {settings.max_ramp_steps} "
                "(ABSTATS_MAX_RAMP_STEPS)",
            )
        )
    if policy.bandit is not None and policy.bandit.metric is not None:
        keys = [m.key for m in metrics]
        if policy.bandit.metric not in keys:
            problems.append(
                FieldProblem(
                    "policy.bandit.metric",
                    f"{policy.bandit.metric!r} is not one of the metrics ({', '.join(keys)})",
                )
            )
    if policy.bandit is not None and policy.bandit.floor * arms > 100:
        problems.append(
            FieldProblem(
                "policy.bandit.floor",
                f"{policy.bandit.floor:g}% for each of {arms} variants is more than 100%: "
                f"use at most {100 / arms:.4g}",
            )
        )
    return problems


CREATE_FIELDS = {
    "key",
    "name",
    "description",
    "control",
    "variants",
    "metrics",
    "policy",
    "router",
    "notifications",
    "metadata",
    "integrations",
}
CREATE_HINTS = {
    "status": "cannot be set: an experiment is created as draft; start it with POST /v1/experiments/{key}/start",
    "weights": "is not a field: give each variant a 'weight'",
    "salt": "is generated by abstats",
}


class ExperimentCreate(BaseModel):
    """``POST /v1/experiments``."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=EXPERIMENT_KEY_PATTERN, description="Lowercase key, e.g. 'churn'.")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    control: str = Field(description="Key of the control variant.")
    variants: list[VariantSpec]
    metrics: list[MetricSpec]
    policy: Policy = Field(default_factory=Policy)
    router: RouterSpec = Field(default_factory=RouterSpec)
    notifications: NotificationSpec | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    integrations: Integrations = Field(
        default_factory=Integrations,
        description="Inference-logger sources (cloudevents) and the MLflow registry (mlflow).",
    )


UPDATE_FIELDS = {
    "name",
    "description",
    "metadata",
    "metrics",
    "variants",
    "control",
    "integrations",
}
UPDATE_HINTS = {
    "key": "cannot be changed: create a new experiment",
    "status": "cannot be PATCHed: use POST /v1/experiments/{key}/start, /pause, /resume, /promote or /rollback",
    "weights": "cannot be PATCHed: use PUT /v1/experiments/{key}/weights",
    "policy": "cannot be PATCHed: use PUT /v1/experiments/{key}/policy",
    "router": "cannot be PATCHed: create the experiment with the router you need",
    "notifications": "cannot be PATCHed",
}


class ExperimentUpdate(BaseModel):
    """``PATCH /v1/experiments/{key}``: name, description and metadata at any time; metrics,
    variants and control only while the experiment is a draft."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    metadata: dict[str, Any] | None = None
    metrics: list[MetricSpec] | None = None
    variants: list[VariantSpec] | None = None
    control: str | None = None
    integrations: Integrations | None = None

    @property
    def draft_only_fields(self) -> list[str]:
        return [f for f in ("metrics", "variants", "control") if f in self.model_fields_set]


class VariantRead(BaseModel):
    key: str
    model_version: str
    metadata: dict[str, Any]
    weight: float
    share: float
    retired: bool


class WeightEpochRead(BaseModel):
    epoch: int
    weights: dict[str, float]
    started_at: datetime
    decision_id: int | None


class ExperimentRead(BaseModel):
    key: str
    name: str
    description: str
    status: str
    control: str
    winner: str | None
    variants: list[VariantRead]
    weights: dict[str, float]
    shares: dict[str, float]
    weight_epoch: WeightEpochRead | None
    metrics: list[dict[str, Any]]
    policy: dict[str, Any]
    router: dict[str, Any]
    notifications: dict[str, Any]
    metadata: dict[str, Any]
    integrations: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    ended_at: datetime | None


class ExperimentList(BaseModel):
    data: list[ExperimentRead]
    has_more: bool
    next_cursor: str | None


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Literal["ingest", "read", "admin"]
    name: str = Field(default="", max_length=200)


class KeyCreated(BaseModel):
    id: str
    scope: str
    name: str
    secret: str = Field(description="Shown once; only a hash is stored.")


def parse_create(raw: Any) -> ExperimentCreate:
    """Validate a create body, reporting every problem with its field path."""
    if not isinstance(raw, dict):
        raise InvalidInput(
            "The body must be a JSON object describing the experiment.",
            errors=[FieldProblem("body", "must be a JSON object")],
        )
    problems = unknown_field_problems(raw, CREATE_FIELDS, CREATE_HINTS)
    known = {k: v for k, v in raw.items() if k in CREATE_FIELDS}
    try:
        body = ExperimentCreate.model_validate(known)
    except ValidationError as exc:
        raise_problems("experiment", problems + validation_problems(exc, ExperimentCreate))
        raise  # unreachable: raise_problems raised
    settings = get_settings()
    problems += variant_and_metric_problems(body.control, body.variants, body.metrics)
    problems += policy_problems(body.policy, body.metrics, len(body.variants))
    problems += size_problems(body.variants, body.metrics, body.metadata, settings)
    problems += router_problems(body.router.backend, dict(body.router.config), settings)
    if body.notifications is not None:
        problems += notification_problems(body.notifications.webhook_url, settings)
    problems += integration_problems(body.integrations, [v.key for v in body.variants])
    raise_problems("experiment", problems)
    return body


def parse_update(raw: Any) -> ExperimentUpdate:
    if not isinstance(raw, dict):
        raise InvalidInput(
            "The body must be a JSON object with the fields to change.",
            errors=[FieldProblem("body", "must be a JSON object")],
        )
    problems = unknown_field_problems(raw, UPDATE_FIELDS, UPDATE_HINTS)
    known = {k: v for k, v in raw.items() if k in UPDATE_FIELDS}
    try:
        body = ExperimentUpdate.model_validate(known)
    except ValidationError as exc:
        raise_problems("update", problems + validation_problems(exc, ExperimentUpdate))
        raise
    problems += variant_and_metric_problems(body.control, body.variants, body.metrics)
    problems += size_problems(body.variants, body.metrics, body.metadata, get_settings())
    raise_problems("update", problems)
    return body
