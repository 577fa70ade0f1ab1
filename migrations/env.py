"""Alembic environment. ``abstats db upgrade`` passes an open connection (holding the migration
advisory lock) in ``config.attributes["connection"]``; plain ``alembic`` resolves the URL itself."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from abstats.db.base import Base
from abstats.db import models  # noqa: F401  (registers the tables)
from abstats.db.partitions import is_partition

target_metadata = Base.metadata


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """The event tables' monthly partitions are made at run time, not modelled: ignore them."""
    return not (type_ == "table" and name is not None and is_partition(name))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from abstats.db.engine import database_url

    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)


if context.is_offline_mode():
    raise SystemExit("abstats migrations run online only: use `abstats db upgrade`.")
run_migrations_online()
