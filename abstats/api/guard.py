"""The request guard: everything a caller must pass before the app spends memory, CPU or a
database connection on it (README, section Security). Plain ASGI, in front of the routes:

1. Headers: all of them together at most ``max_header_bytes`` (431).
2. Path and query: no NUL (PostgreSQL refuses it in text; it would otherwise reach a query as a
   key and fail as a 500) -> 422 naming the parameter.
3. ``/v1``: the bearer token is checked before any byte of the body is read. A token that is not
   of the key format is refused without a lookup; known keys come from an in-process cache keyed
   by the token's hash (``abstats.keys``). A refused request with a body is answered
   with ``Connection: close``, so the body it was sending is never read, let alone parsed.
4. The body is read completely here, before the app runs: a slow or stalled sender holds no
   database connection (the handler, which takes one, starts once the body is in), it gets 408
   after ``body_timeout_seconds``, and 413 past ``max_body_bytes`` (``POST /v1/events``) or
   ``max_request_body_bytes`` (every other route) -- as declared, then as it streams in. A client
   that disconnects mid-body gets nothing and is counted as a 4xx, not an error.
5. A JSON body with a NUL in a string is refused with 422 naming its field (other than
   ``/v1/events``, which rejects such events one by one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from abstats import keys
from abstats.api.problems import error_problem, pool_exhausted, problem_response
from abstats.config import get_settings
from abstats.db.engine import is_connection_error
from abstats.deps import bearer_token, get_session, principal_of
from abstats.errors import (
    AbstatsError,
    DatabaseUnavailable,
    FieldProblem,
    InvalidInput,
    Unauthorized,
)

EVENTS_PATH = "/v1/events"
DISCONNECTED = "abstats.client_disconnected"
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class _ClientGone(Exception):
    pass


class _TooLarge(Exception):
    pass


def nul_field(value: Any, path: str = "body") -> str | None:
    """The JSON path of the first string (or object key) holding a NUL, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path != "body" else str(key)
            if "\x00" in str(key):
                return sub
            found = nul_field(item, sub)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = nul_field(item, f"{path}[{i}]")
            if found:
                return found
    return None


def _json_nul_field(body: bytes) -> str | None:
    try:
        return nul_field(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None  # not JSON: the route's own parsing says so


class RequestGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = get_settings()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        has_body = _has_body(scope["method"], headers)

        async def refuse(response: Any) -> None:
            if has_body:  # the unread body is dropped with the connection, never parsed
                response.headers["Connection"] = "close"
            await response(scope, receive, send)

        if sum(len(k) + len(v) + 4 for k, v in headers) > settings.max_header_bytes:
            await refuse(
                problem_response(
                    431,
                    "Request header fields too large",
                    f"The request headers are larger than {settings.max_header_bytes} bytes "
                    "(ABSTATS_MAX_HEADER_BYTES).",
                    type_slug="headers-too-large",
                    instance=None,
                )
            )
            return
        path: str = scope["path"]
        try:
            _check_path_and_query(path, scope.get("query_string", b""))
            if path.startswith("/v1/"):
                scope.setdefault("state", {})["principal"] = await self._authenticate(
                    scope, headers
                )
        except Unauthorized as exc:
            if _routed(scope):
                await refuse(error_problem(exc, path))
            else:  # no such route: a 404 (the router answers it without reading a body)
                await self.app(scope, receive, send)
            return
        except AbstatsError as exc:
            await refuse(error_problem(exc, path))
            return
        except PoolTimeout:
            await refuse(pool_exhausted(path))
            return
        except DBAPIError as exc:
            if not is_connection_error(exc):
                raise
            await refuse(error_problem(DatabaseUnavailable(), path))
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        limit = settings.max_body_bytes if path == EVENTS_PATH else settings.max_request_body_bytes
        setting = (
            "ABSTATS_MAX_BODY_BYTES" if path == EVENTS_PATH else "ABSTATS_MAX_REQUEST_BODY_BYTES"
        )
        too_large = problem_response(
            413,
            "Payload too large",
            f"The body is larger than {limit} bytes ({setting}); "
            + ("send smaller batches." if path == EVENTS_PATH else "send a smaller body."),
            type_slug="payload-too-large",
            instance=path,
        )
        declared = _header(headers, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await refuse(too_large)
            return
        try:
            async with asyncio.timeout(settings.body_timeout_seconds):
                body = await _read_body(receive, limit)
        except _ClientGone:
            scope.setdefault("state", {})[DISCONNECTED] = True
            return
        except _TooLarge:
            await refuse(too_large)
            return
        except TimeoutError:
            await refuse(
                problem_response(
                    408,
                    "Request timeout",
                    f"The body was not received within {settings.body_timeout_seconds:g} s "
                    "(ABSTATS_BODY_TIMEOUT_SECONDS).",
                    type_slug="request-timeout",
                    instance=path,
                )
            )
            return
        if path != EVENTS_PATH and b"\\u0000" in body.lower():
            field = await run_in_threadpool(_json_nul_field, body)
            if field is not None:
                await refuse(
                    error_problem(
                        InvalidInput(
                            f"{field}: must not contain NUL characters",
                            errors=[FieldProblem(field, "must not contain NUL characters")],
                        ),
                        path,
                    )
                )
                return
        await self.app(scope, _replay(body, receive), send)

    async def _authenticate(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> Any:
        token = bearer_token((_header(headers, b"authorization") or "").strip())
        provider = _session_override(scope)
        if provider is None:
            return await principal_of(token)
        # tests: the app's requests share one session (keys created in it are not committed)
        principal = await run_in_threadpool(_lookup_with, provider, token)
        if principal is None:
            raise Unauthorized("Unknown or revoked API key.")
        return principal


def _routed(scope: Scope) -> bool:
    """True when a route of the app serves this path (any method): unknown paths stay 404s.
    Only asked for refused requests, so the hot paths do not pay for the route matching."""
    app = scope.get("app")
    if not isinstance(app, FastAPI):
        return True
    return any(route.matches(scope)[0] != Match.NONE for route in app.router.routes)


def _session_override(scope: Scope) -> Callable[[], Generator[Any, None, None]] | None:
    app = scope.get("app")
    if isinstance(app, FastAPI):
        override: Callable[[], Generator[Any, None, None]] | None = app.dependency_overrides.get(
            get_session
        )
        return override
    return None


def _lookup_with(provider: Callable[[], Generator[Any, None, None]], token: str) -> Any:
    sessions = provider()
    session = next(sessions)
    try:
        return keys.authenticate(session, token)
    finally:
        sessions.close()


def _has_body(method: str, headers: list[tuple[bytes, bytes]]) -> bool:
    length = _header(headers, b"content-length")
    if length is not None:
        return length != "0"
    return _header(headers, b"transfer-encoding") is not None or method in _BODY_METHODS


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _check_path_and_query(path: str, query: bytes) -> None:
    if "\x00" in path:
        raise InvalidInput(
            "The path contains a NUL character: keys and ids are printable text.",
            errors=[FieldProblem("path", "must not contain NUL characters")],
        )
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                field = name.replace("\x00", "\\0") or "query"
                raise InvalidInput(
                    f"{field}: must not contain NUL characters",
                    errors=[FieldProblem(field, "must not contain NUL characters")],
                )


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def install_request_guard(app: FastAPI) -> None:
    app.add_middleware(RequestGuard)
