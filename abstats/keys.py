"""API keys: ``abs_<id>_<secret>``; only a SHA-256 of the secret is stored.

Secrets are 32 random bytes, so a fast hash is enough (no password stretching needed: there is
nothing to brute-force). Known keys are cached in-process by their hash (``principal_cache``:
reloaded in the background once ``CACHE_SECONDS`` old, never older than twice that), so the hot
paths do not query the key table on every request; a revoked key stops working within 10 s (at
once in the process that revoked it). Unknown tokens are never cached (random tokens would fill
the memory) and a token that is not of the key format is refused without a lookup. The secret
itself is never a cache key and never logged: only its hash is.

``last_used_at`` is written by the cache's reload (at most once a minute per key and process), and
every creation and revocation is recorded in ``api_key_event``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from abstats.cache import RefreshingCache
from abstats.db.engine import new_session
from abstats.db.models import API_SCOPES, ApiKey, ApiKeyEvent
from abstats.errors import FieldProblem, InvalidInput, NotFound

CACHE_SECONDS = 5.0
LAST_USED_RESOLUTION_SECONDS = 60
_PREFIX = "abs"
# abs_<12 hex>_<43 urlsafe base64>; a few characters of slack for keys minted by older versions
KEY_FORMAT = re.compile(r"abs_[0-9a-f]{1,32}_[A-Za-z0-9_-]{16,128}")
MAX_TOKEN_LENGTH = 200


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


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def well_formed(token: str) -> bool:
    """True when ``token`` could be a key at all (checked before any lookup)."""
    return len(token) <= MAX_TOKEN_LENGTH and KEY_FORMAT.fullmatch(token) is not None


def _record(session: Session, key_id: str, action: str, scope: str, actor: str) -> None:
    session.add(ApiKeyEvent(key_id=key_id, action=action, scope=scope, actor=actor[:200]))


def create_key(session: Session, *, scope: str, name: str = "", actor: str = "cli") -> NewKey:
    if scope not in API_SCOPES:
        raise InvalidInput(
            f"scope must be one of {', '.join(API_SCOPES)}",
            errors=[
                FieldProblem("scope", f"must be one of {', '.join(API_SCOPES)}, got {scope!r}")
            ],
        )
    key_id = secrets.token_hex(6)
    secret = f"{_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    session.add(ApiKey(id=key_id, name=name, scope=scope, secret_hash=digest(secret)))
    _record(session, key_id, "create", scope, actor)
    session.flush()
    return NewKey(id=key_id, scope=scope, name=name, secret=secret)


def revoke_key(session: Session, key_id: str, *, actor: str = "cli") -> None:
    scope = session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
        .returning(ApiKey.scope)
    ).scalar_one_or_none()
    if scope is None:
        raise NotFound(f"No active API key with id {key_id!r}.")
    _record(session, key_id, "revoke", scope, actor)
    clear_cache()


def list_keys(session: Session, *, include_revoked: bool = False) -> list[ApiKey]:
    """Every key (never a secret: only hashes are stored), oldest first."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query))


def count_active_keys(session: Session) -> int:
    return len(session.scalars(select(ApiKey.id).where(ApiKey.revoked_at.is_(None))).all())


def lookup(session: Session, secret_digest: str, *, touch: bool = False) -> Principal | None:
    """The principal of the key with this hash, or None for an unknown or revoked key (always
    read from the database). ``touch``: stamp ``last_used_at`` when it is a minute old."""
    row = session.execute(
        select(ApiKey.id, ApiKey.scope, ApiKey.secret_hash).where(
            ApiKey.secret_hash == secret_digest, ApiKey.revoked_at.is_(None)
        )
    ).first()
    if row is None or not hmac.compare_digest(row.secret_hash, secret_digest):
        return None
    if touch:
        now = datetime.now(UTC)
        session.execute(
            update(ApiKey)
            .where(
                ApiKey.id == row.id,
                or_(
                    ApiKey.last_used_at.is_(None),
                    ApiKey.last_used_at < now - timedelta(seconds=LAST_USED_RESOLUTION_SECONDS),
                ),
            )
            .values(last_used_at=now)
        )
    return Principal(key_id=row.id, scope=row.scope)


def authenticate(session: Session, secret: str) -> Principal | None:
    """The key's principal, or None (a blocking lookup; the API uses ``principal_cache``)."""
    if not well_formed(secret):
        return None
    return lookup(session, digest(secret))


def _load_principal(secret_digest: str) -> Principal | None:
    with new_session() as session:
        principal = lookup(session, secret_digest, touch=True)
        session.commit()
    return principal


# Keyed by the SHA-256 of the token: the secret is neither kept in memory nor logged.
principal_cache: RefreshingCache[Principal | None] = RefreshingCache(
    _load_principal,
    ttl=CACHE_SECONDS,
    max_stale=2 * CACHE_SECONDS,
    keep=lambda principal: principal is not None,
)


def clear_cache() -> None:
    principal_cache.invalidate()
