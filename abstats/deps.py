"""FastAPI request dependencies shared by every domain's endpoints: the database session (the
edge that commits) and API-key auth. Lives below the domains so their endpoints can import it;
API keys themselves are ``abstats.keys`` (an import-linter contract keeps both from importing
any domain package, so there is no loop through ``abstats.experiments``)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from abstats import keys
from abstats.db.engine import is_connection_error, new_session
from abstats.errors import DatabaseUnavailable, Forbidden, Unauthorized
from abstats.keys import Principal


def get_session() -> Iterator[Session]:
    """One session per request; committed when the handler returns without error."""
    session = new_session()
    try:
        yield session
        session.commit()
    except DBAPIError as exc:
        session.rollback()
        if is_connection_error(exc):
            raise DatabaseUnavailable() from exc
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# scope="function": the commit (and its failure, a 503) happens before the response is sent.
# With FastAPI's default ("request") the code after ``yield`` runs after the response: a failed
# commit would follow a 200 (seen in the outage test as "response already started").
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def bearer_token(authorization: str) -> str:
    """The key of an ``Authorization`` header value: ``Bearer <key>``, or ``Basic`` with the key
    as the password (for senders that take credentials only in their target URL, e.g. KServe's
    inference logger: ``http://abstats:KEY@host/v1/cloudevents``); 401 when there is none."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "basic" and token.strip():
        try:
            token = base64.b64decode(token.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("Malformed Basic credentials: send base64('user:KEY').") from None
        scheme = "bearer"
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing API key: send `Authorization: Bearer <key>`.")
    return token.strip()


def _bearer(request: Request) -> str:
    return bearer_token(request.headers.get("authorization", ""))


async def principal_of(token: str) -> Principal:
    """The principal of a bearer token; 401 for an unknown, revoked or malformed one. Known keys
    come from the in-process cache (keyed by the token's hash); nothing else is cached."""
    if not keys.well_formed(token):
        raise Unauthorized("Unknown or revoked API key.")
    principal = await keys.principal_cache.get(keys.digest(token))
    if principal is None:
        raise Unauthorized("Unknown or revoked API key.")
    return principal


def has_scope(principal: Principal, scope: str) -> bool:
    """The scope rule: ``admin`` has every scope, other keys only their own."""
    return principal.scope == "admin" or principal.scope == scope


def check_scope(principal: Principal, scope: str) -> Principal:
    if not has_scope(principal, scope):
        raise Forbidden(f"This API key has scope '{principal.scope}'; this route needs '{scope}'.")
    return principal


async def request_principal(request: Request) -> Principal:
    """The principal the request guard (``abstats.api.guard``) authenticated before the body was
    read; authenticated here when the app runs without the guard."""
    principal: Principal | None = request.scope.get("state", {}).get("principal")
    if principal is None:
        principal = await principal_of(_bearer(request))
        request.state.principal = principal
    return principal


def require_scope(scope: str):  # type: ignore[no-untyped-def]
    """Dependency factory: the caller's key must have ``scope`` (``admin`` has every scope). No
    database session is taken for this: a request holds a connection only in its handler."""

    async def _check(request: Request) -> Principal:
        return check_scope(await request_principal(request), scope)

    return _check


ReadKey = Annotated[Principal, Depends(require_scope("read"))]
IngestKey = Annotated[Principal, Depends(require_scope("ingest"))]
AdminKey = Annotated[Principal, Depends(require_scope("admin"))]
