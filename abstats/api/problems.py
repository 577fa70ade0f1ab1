"""RFC 9457 problem+json: the one place where errors become HTTP responses."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from abstats.api.responses import JsonResponse
from abstats.db.engine import is_connection_error
from abstats.errors import AbstatsError, DatabaseUnavailable, InvalidInput
from abstats.logging import get_logger

PROBLEM_JSON = "application/problem+json"
# FastAPI's whole message when a JSON body cannot be decoded (not UTF-8, nested too deeply)
FASTAPI_BODY_ERROR = "There was an error parsing the body"
_log = get_logger(__name__)


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    type_slug: str = "about:blank",
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JsonResponse:
    body: dict[str, Any] = {
        "type": type_slug
        if type_slug == "about:blank"
        else f"https://abstats.dev/problems/{type_slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return JsonResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def error_problem(exc: AbstatsError, path: str | None) -> JsonResponse:
    """The problem+json response of one of our errors (503s carry ``Retry-After``)."""
    headers = None
    if isinstance(exc, DatabaseUnavailable):
        headers = {"Retry-After": str(exc.retry_after)}
    errors = [e.as_dict() for e in exc.errors] if isinstance(exc, InvalidInput) else None
    return problem_response(
        exc.status,
        exc.title,
        exc.detail,
        type_slug=exc.type_slug,
        instance=path,
        headers=headers,
        errors=errors,
        **exc.extra,
    )


def pool_exhausted(path: str | None) -> JsonResponse:
    """Every pooled database connection is busy (ABSTATS_POOL_TIMEOUT_SECONDS passed): 503 with
    ``Retry-After``, which clients retry, rather than a 500 they would not."""
    return error_problem(
        DatabaseUnavailable(
            "Every database connection of this server is busy; retry shortly.", retry_after=1
        ),
        path,
    )


def _loc_to_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts: list[str] = []
    for item in loc:
        if item in ("body", "query", "path", "header"):
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "body"


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(AbstatsError)
    async def _abstats_error(request: Request, exc: AbstatsError) -> JsonResponse:
        return error_problem(exc, request.url.path)

    @app.exception_handler(PoolTimeout)
    async def _pool_timeout(request: Request, exc: PoolTimeout) -> JsonResponse:
        return pool_exhausted(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JsonResponse:
        errors = [
            {"field": _loc_to_path(e.get("loc", ())), "message": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "message": "invalid"}
        detail = f"{first['field']}: {first['message']}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more problem(s), see errors)"
        return problem_response(
            422,
            "Invalid input",
            detail,
            type_slug="invalid-input",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JsonResponse:
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == FASTAPI_BODY_ERROR:
            detail = (
                "The body could not be parsed: send one JSON object, UTF-8 encoded, with "
                "Content-Type: application/json."
            )
        return problem_response(
            exc.status_code,
            {400: "Bad request", 404: "Not found", 405: "Method not allowed"}.get(
                exc.status_code, "Error"
            ),
            detail,
            instance=request.url.path,
            headers=dict(exc.headers) if exc.headers else None,
        )

    @app.exception_handler(DBAPIError)
    async def _db_error(request: Request, exc: DBAPIError) -> JsonResponse:
        if is_connection_error(exc):
            err = DatabaseUnavailable()
            return problem_response(
                err.status,
                err.title,
                err.detail,
                type_slug=err.type_slug,
                instance=request.url.path,
                headers={"Retry-After": str(err.retry_after)},
            )
        _log.exception("database error", path=request.url.path)
        return problem_response(
            500,
            "Internal error",
            "An unexpected database error occurred; it was logged.",
            type_slug="internal",
            instance=request.url.path,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JsonResponse:
        _log.exception("unhandled error", path=request.url.path)
        return problem_response(
            500,
            "Internal error",
            "An unexpected error occurred; it was logged.",
            type_slug="internal",
            instance=request.url.path,
        )
