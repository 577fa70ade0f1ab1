"""Run Alembic migrations safely from several processes at once (PostgreSQL advisory lock)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from abstats.db.partitions import ensure_partitions

# Arbitrary constant: the advisory-lock key that serialises migrations across processes.
MIGRATION_LOCK_KEY = 0x61627374_01  # "abst" + 1

_PACKAGE = Path(__file__).resolve().parents[1]  # abstats/
_CHECKOUT = _PACKAGE.parent


def migrations_dir() -> Path:
    """The Alembic scripts: ``abstats/migrations`` in an installed wheel (setup.py maps them
    there), else the checkout's top-level ``migrations/`` (an editable install)."""
    for candidate in (_PACKAGE / "migrations", _CHECKOUT / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"abstats' migrations are missing (looked in {_PACKAGE / 'migrations'} and "
        f"{_CHECKOUT / 'migrations'}); reinstall abstats"
    )


def alembic_config() -> Config:
    """Alembic's settings in code (no alembic.ini needed; the checkout's is for the ``alembic``
    command): the scripts' location and UTC timestamps."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("timezone", "UTC")
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """``alembic upgrade`` under an advisory lock: idempotent, and safe when two processes start.
    At head, the event tables' monthly partitions are then made up to three months ahead."""

    def run(cfg: Config) -> None:
        command.upgrade(cfg, revision)
        conn = cfg.attributes["connection"]
        if revision == "head" and _is_partitioned(conn):
            ensure_partitions(conn)

    _locked(engine, run)


def _is_partitioned(conn: Connection) -> bool:
    found = conn.execute(
        text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "WHERE c.relname = 'prediction' AND pg_table_is_visible(c.oid)"
        )
    ).first()
    return found is not None


def downgrade(engine: Engine, revision: str = "base") -> None:
    _locked(engine, lambda cfg: command.downgrade(cfg, revision))


def _locked(engine: Engine, run: object) -> None:
    cfg = alembic_config()
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()
        try:
            cfg.attributes["connection"] = conn
            run(cfg)  # type: ignore[operator]
            conn.commit()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()


def at_head(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
