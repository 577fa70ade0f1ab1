"""Console sessions and CSRF tokens.

A sign-in stores in a cookie, signed with the server's secret (itsdangerous, with a timestamp):
the SHA-256 of the key (what the database stores; never the key itself, so a stolen cookie is not
a bearer key) and a random CSRF token. The cookie is ``HttpOnly``, ``SameSite=Strict``,
``Secure`` over HTTPS, and expires after ``ABSTATS_CONSOLE_SESSION_SECONDS``; every request reads
the key's row again, so a revoked key signs its sessions out at once. Every form carries the
session's CSRF token; the sign-in form carries one from a short-lived pre-session cookie.

The secret is ``ABSTATS_CONSOLE_SECRET``, or one generated on first use into
``<data dir>/console-secret`` (mode 0600) and read from there afterwards.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from abstats.config import get_settings
from abstats.keys import Principal, digest, lookup

SESSION_COOKIE = "abstats_console"
LOGIN_COOKIE = "abstats_console_login"
LOGIN_SECONDS = 3600
SECRET_FILE = "console-secret"


@lru_cache(maxsize=1)
def server_secret() -> str:
    settings = get_settings()
    if settings.console_secret:
        return settings.console_secret
    path = Path(settings.data_dir) / SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # written whole to a private temporary file, then linked into place: a second process
        # (another worker starting at the same moment) finds either no file or the whole one
        tmp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won; use its secret
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_text(encoding="utf-8").strip()
    if not secret:
        raise RuntimeError(f"{path} is empty: delete it or set ABSTATS_CONSOLE_SECRET.")
    return secret


def _serializer(purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(server_secret(), salt=f"abstats-console-{purpose}")


@dataclass(frozen=True)
class ConsoleSession:
    principal: Principal
    csrf: str


def _set_cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def sign_in(request: Request, response: Response, secret: str) -> None:
    token = _serializer("session").dumps({"d": digest(secret), "c": new_token()})
    _set_cookie(request, response, SESSION_COOKIE, token, get_settings().console_session_seconds)
    response.delete_cookie(LOGIN_COOKIE, path="/")


def sign_out(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


def _load(token: str | None, purpose: str, max_age: int) -> Any:
    if not token:
        return None
    try:
        return _serializer(purpose).loads(token, max_age=max_age)
    except BadSignature:  # also SignatureExpired
        return None


def current(request: Request, session: Session) -> ConsoleSession | None:
    """The signed-in key, or None (no cookie, a bad signature, expired, or the key revoked)."""
    data = _load(
        request.cookies.get(SESSION_COOKIE), "session", get_settings().console_session_seconds
    )
    if not isinstance(data, dict) or not isinstance(data.get("d"), str):
        return None
    principal = lookup(session, data["d"])
    if principal is None:
        return None
    return ConsoleSession(principal=principal, csrf=str(data.get("c", "")))


def csrf_ok(expected: str, given: object) -> bool:
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(expected, given)


def new_token() -> str:
    return secrets.token_urlsafe(24)


def set_login_csrf(request: Request, response: Response, token: str) -> None:
    """Keep the sign-in form's CSRF ``token`` (signed) in a short-lived pre-session cookie."""
    _set_cookie(request, response, LOGIN_COOKIE, _serializer("login").dumps(token), LOGIN_SECONDS)


def login_csrf_ok(request: Request, given: object) -> bool:
    expected = _load(request.cookies.get(LOGIN_COOKIE), "login", LOGIN_SECONDS)
    return isinstance(expected, str) and csrf_ok(expected, given)
