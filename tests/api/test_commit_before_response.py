"""A request's transaction commits before its response is sent: when the commit fails, the client
gets the 503 (retry), never a 200 for a change that was not stored. Real database; the failure
is the session's backend terminated while the handler runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from abstats.deps import SessionDep


@pytest.fixture
def app_client(engine: Engine) -> Iterator[TestClient]:
    from abstats.api.app import create_app

    app = create_app(with_lifespan_hooks=False)

    @app.post("/test/write-then-lose-connection")
    def write_then_lose_connection(session: SessionDep) -> dict[str, Any]:
        session.execute(text("CREATE TEMP TABLE IF NOT EXISTS t_commit (x int)"))
        session.execute(text("INSERT INTO t_commit VALUES (1)"))
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        return {"stored": True}  # the commit happens after this, in the session dependency

    @app.post("/test/write")
    def write(session: SessionDep) -> dict[str, Any]:
        return {"one": session.execute(text("SELECT 1")).scalar_one()}

    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_a_failed_commit_is_a_503_not_a_200(app_client: TestClient) -> None:
    response = app_client.post("/test/write-then-lose-connection")
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]
    assert response.headers["content-type"].startswith("application/problem+json")
    # the pool recovers: the next request gets a fresh connection
    assert app_client.post("/test/write").json() == {"one": 1}
