"""API keys: ``abs_<id>_<secret>``; only a SHA-256 of the secret is stored.

Secrets are 32 random bytes, so a fast hash is enough (no password stretching needed: there is
nothing to brute-force). Lookups are cached in-process for ``CACHE_SECONDS`` so the ingest hot
path does not query the key table on every request; a revoked key stops working within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from abstats.db.models import API_SCOPES, ApiKey
from abstats.errors import FieldProblem, InvalidInput, NotFound

CACHE_SECONDS = 10.0
_PREFIX = "abs"


@dataclass(frozen=True)
class Principal:
    key_id: str
    scope: str

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


@dataclass(frozen=True)
class NewKey:
    id: str
    scope: str
    name: str
    secret: str  # shown once


_cache: dict[str, tuple[float, Principal | None]] = {}
_cache_lock = threading.Lock()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, *, scope: str, name: str = "") -> NewKey:
    if scope not in API_SCOPES:
        raise InvalidInput(
            f"scope must be one of {', '.join(API_SCOPES)}",
            errors=[
                FieldProblem("scope", f"must be one of {', '.join(API_SCOPES)}, got {scope!r}")
            ],
        )
    key_id = secrets.token_hex(6)
    secret = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(id=key_id, name=name, scope=scope, secret_hash=_hash(secret)))
    session.flush()
    return NewKey(id=key_id, scope=scope, name=name, secret=secret)


def revoke_key(session: Session, key_id: str) -> None:
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"No active API key with id {key_id!r}.")
    clear_cache()


def list_keys(session: Session, *, include_revoked: bool = False) -> list[ApiKey]:
    """Every key (never a secret: only hashes are stored), oldest first."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))


def count_active_keys(session: Session) -> int:
    return len(session.scalars(select(ApiKey.id).where(ApiKey.revoked_at.is_(None))).all())


def authenticate(session: Session, secret: str, *, cached: bool = True) -> Principal | None:
    """The key's principal, or None for an unknown or revoked key. ``cached=False`` reads the
    database (callers with a cache of their own, so that staleness does not add up)."""
    now = time.monotonic()
    if cached:
        with _cache_lock:
            hit = _cache.get(secret)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
    principal: Principal | None = None
    digest = _hash(secret)
    row = session.execute(
        select(ApiKey.id, ApiKey.scope, ApiKey.secret_hash).where(
            ApiKey.secret_hash == digest, ApiKey.revoked_at.is_(None)
        )
    ).first()
    if row is not None and hmac.compare_digest(row.secret_hash, digest):
        principal = Principal(key_id=row.id, scope=row.scope)
    with _cache_lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[secret] = (now, principal)
    return principal


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
