"""Engine and sessions. ``database_url()`` resolves the configured URL or the embedded default."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from abstats.config import Settings, get_settings
from abstats.db.embedded import embedded_database_url


def normalize_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and use the psycopg2 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def database_url(settings: Settings | None = None) -> str:
    """The configured database, or the embedded one when ``ABSTATS_DATABASE_URL`` is unset."""
    settings = settings or get_settings()
    if settings.database_url:
        return normalize_url(settings.database_url)
    return embedded_database_url(settings.data_dir)


def make_engine(
    url: str, *, settings: Settings | None = None, pool_size: int | None = None
) -> Engine:
    settings = settings or get_settings()
    engine = create_engine(
        normalize_url(url),
        pool_size=pool_size or settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_seconds,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": "abstats"},
    )
    if settings.statement_timeout_ms:
        timeout = settings.statement_timeout_ms

        @event.listens_for(engine, "connect")
        def _set_timeout(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET statement_timeout = {int(timeout)}")

    return engine


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The process-wide engine (created on first use)."""
    return make_engine(database_url())


@lru_cache(maxsize=1)
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def new_session() -> Session:
    return _session_factory()()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A unit of work for jobs and CLI commands: commit on success, roll back on error."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def reset_engine() -> None:
    """Forget the cached engine (tests, and after fork)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    _session_factory.cache_clear()


def is_connection_error(exc: BaseException) -> bool:
    """True when a database error means PostgreSQL is unreachable (not a bad query)."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
