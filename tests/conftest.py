"""Test harness: a real PostgreSQL, never a mock.

The server is ``ABSTATS_TEST_DATABASE_URL`` when set, else the embedded PostgreSQL from the pip
wheel (data under ``.pytest-pg/``). Each test session creates a fresh database on it, builds the
schema with ``alembic upgrade head`` (so migrations are tested), and drops it at the end.

Fixtures:
- ``db_session``: a Session inside a transaction that is rolled back after the test.
- ``client``: a FastAPI TestClient whose requests share ``db_session`` (rolled back too).
- ``committed_engine``: for tests that need real commits (concurrency, processes); every table is
  truncated afterwards.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM ends the session like Ctrl-C: teardown and atexit run, so the test database is
    dropped and an embedded PostgreSQL this session started is stopped (not left running)."""
    signal.signal(signal.SIGTERM, _interrupt)


def _server_url() -> str:
    url = os.environ.get("ABSTATS_TEST_DATABASE_URL")
    if url:
        from abstats.db.engine import normalize_url

        return normalize_url(url)
    from abstats.db.embedded import embedded_database_url

    return embedded_database_url(ROOT / ".pytest-pg")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = make_url(_server_url())
    name = f"abstats_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    os.environ["ABSTATS_DATABASE_URL"] = url
    os.environ["ABSTATS_DATA_DIR"] = str(tmp_path_factory.mktemp("data"))
    os.environ["ABSTATS_REPORTS_DIR"] = str(tmp_path_factory.mktemp("reports"))
    os.environ.setdefault("ABSTATS_LOG_JSON", "false")
    # the operator's allow-lists (README, section Security): tests' receivers run on this host
    for setting in ("WEBHOOK", "NOTIFICATION", "SAGEMAKER"):
        os.environ.setdefault(f"ABSTATS_{setting}_ALLOWED_HOSTS", "127.0.0.1,localhost")
    from abstats.config import get_settings
    from abstats.db import migrate
    from abstats.db.engine import get_engine, reset_engine

    get_settings.cache_clear()
    reset_engine()
    migrate.upgrade(get_engine())
    yield url
    reset_engine()
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Engine:
    from abstats.db.engine import get_engine

    return get_engine()


@pytest.fixture
def db_session(engine: Engine) -> Iterator[Session]:
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    try:
        yield session
    finally:
        session.close()
        if transaction.is_active:
            transaction.rollback()
        connection.close()


@pytest.fixture
def client(db_session: Session) -> Iterator[TestClient]:
    from fastapi.testclient import TestClient

    from abstats.api.app import create_app
    from abstats.deps import get_session
    from abstats.keys import clear_cache

    def _override() -> Iterator[Session]:
        yield db_session
        db_session.commit()  # releases the savepoint; the outer transaction is rolled back

    app = create_app()
    app.dependency_overrides[get_session] = _override
    clear_cache()
    with TestClient(app) as test_client:
        yield test_client
    clear_cache()


@pytest.fixture
def committed_engine(engine: Engine) -> Iterator[Engine]:
    yield engine
    from abstats.db.base import Base

    tables = ", ".join(f'"{t.name}"' for t in reversed(Base.metadata.sorted_tables))
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    from abstats.keys import clear_cache

    clear_cache()


def _make_key(session: Session, scope: str) -> str:
    from abstats.keys import create_key

    return create_key(session, scope=scope, name=f"test {scope}").secret


@pytest.fixture
def admin_headers(db_session: Session) -> dict[str, str]:
    return {"Authorization": f"Bearer {_make_key(db_session, 'admin')}"}


@pytest.fixture
def ingest_headers(db_session: Session) -> dict[str, str]:
    return {"Authorization": f"Bearer {_make_key(db_session, 'ingest')}"}


@pytest.fixture
def read_headers(db_session: Session) -> dict[str, str]:
    return {"Authorization": f"Bearer {_make_key(db_session, 'read')}"}
