"""The exception tree of abstats. The API maps it to RFC 9457 problem+json in one place
(``abstats.api.problems``); the CLI prints ``detail``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class FieldProblem:
    """One invalid field: a JSON path (``events[3].latency_ms``) and what to fix."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class AbstatsError(Exception):
    """Base of every error abstats raises on purpose."""

    status: int = 500
    title: str = "Internal error"
    type_slug: str = "internal"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra: dict[str, Any] = extra or {}


class InvalidInput(AbstatsError):
    """The request is well-formed but a value is wrong; ``errors`` lists each field."""

    status = 422
    title = "Invalid input"
    type_slug = "invalid-input"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldProblem] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail, extra=extra)
        self.errors: list[FieldProblem] = errors or []


class BadRequest(AbstatsError):
    """The request body is not of the expected shape at all."""

    status = 400
    title = "Bad request"
    type_slug = "bad-request"


class PayloadTooLarge(AbstatsError):
    status = 413
    title = "Payload too large"
    type_slug = "payload-too-large"


class NotFound(AbstatsError):
    status = 404
    title = "Not found"
    type_slug = "not-found"


class Conflict(AbstatsError):
    """The request conflicts with the resource's state (e.g. editing variants after start)."""

    status = 409
    title = "Conflict"
    type_slug = "conflict"


class Unauthorized(AbstatsError):
    status = 401
    title = "Unauthorized"
    type_slug = "unauthorized"


class Forbidden(AbstatsError):
    status = 403
    title = "Forbidden"
    type_slug = "forbidden"


class DatabaseUnavailable(AbstatsError):
    """PostgreSQL cannot be reached; the client should retry after ``retry_after`` seconds."""

    status = 503
    title = "Service unavailable"
    type_slug = "database-unavailable"

    def __init__(
        self, detail: str = "The database is unreachable; retry later.", *, retry_after: int = 5
    ) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ConfigurationError(AbstatsError):
    """abstats cannot start as configured (e.g. no database URL and no embedded server)."""

    status = 500
    title = "Configuration error"
    type_slug = "configuration"


class RouterError(AbstatsError):
    """A router backend failed to apply or confirm weights."""

    status = 502
    title = "Router backend failed"
    type_slug = "router-failed"
