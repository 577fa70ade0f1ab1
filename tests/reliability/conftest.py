"""Fixtures of the reliability suite (helpers in ``harness``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from tests.reliability.harness import (
    ApiProcess,
    ThrowawayPostgres,
    create_scratch_database,
    drop_database,
    throwaway_pgdata,
)


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    """A migrated database of its own on the test server, for API and scheduler subprocesses."""
    url = create_scratch_database(database_url)
    yield url
    drop_database(url)


@pytest.fixture
def scratch_engine(scratch_url: str) -> Iterator[Engine]:
    engine = create_engine(scratch_url, pool_size=2, pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture
def api_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], ApiProcess]]:
    started: list[ApiProcess] = []

    def make(env: dict[str, str]) -> ApiProcess:
        api = ApiProcess(env, tmp_path)
        started.append(api)
        return api

    yield make
    for api in started:
        api.stop()


@pytest.fixture
def throwaway_pg() -> Iterator[ThrowawayPostgres]:
    pg = ThrowawayPostgres(throwaway_pgdata())
    yield pg
    pg.cleanup()
