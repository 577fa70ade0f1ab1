"""FastAPI request dependencies shared by every domain's endpoints: the database session (the
edge that commits) and API-key auth. Lives below the domains so their endpoints can import it."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from abstats.db.engine import is_connection_error, new_session
from abstats.errors import DatabaseUnavailable, Forbidden, Unauthorized
from abstats.experiments.keys import Principal, authenticate


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


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "basic" and token.strip():
        # the key as the password: for senders that take credentials only in their target URL
        # (http://abstats:KEY@host/v1/cloudevents, e.g. KServe's inference logger)
        try:
            token = base64.b64decode(token.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("Malformed Basic credentials: send base64('user:KEY').") from None
        scheme = "bearer"
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing API key: send `Authorization: Bearer <key>`.")
    return token.strip()


def require_scope(scope: str):  # type: ignore[no-untyped-def]
    """Dependency factory: the caller's key must have ``scope`` (``admin`` has every scope)."""

    def _check(request: Request, session: SessionDep) -> Principal:
        principal = authenticate(session, _bearer(request))
        if principal is None:
            raise Unauthorized("Unknown or revoked API key.")
        if principal.scope != "admin" and principal.scope != scope:
            raise Forbidden(
                f"This API key has scope '{principal.scope}'; this route needs '{scope}'."
            )
        request.state.principal = principal
        return principal

    return _check


ReadKey = Annotated[Principal, Depends(require_scope("read"))]
IngestKey = Annotated[Principal, Depends(require_scope("ingest"))]
AdminKey = Annotated[Principal, Depends(require_scope("admin"))]
