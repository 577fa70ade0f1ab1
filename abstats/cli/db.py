"""``abstats db upgrade|downgrade|current``."""

from __future__ import annotations

import typer

from abstats.cli.main import app
from abstats.db import migrate
from abstats.db.engine import get_engine

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(revision: str = typer.Argument("head")) -> None:
    """Migrate to REVISION (default head). Idempotent; safe when several processes run it."""
    migrate.upgrade(get_engine(), revision)
    typer.echo(f"database at {migrate.current_revision(get_engine())}")


@db_app.command("downgrade")
def downgrade(revision: str = typer.Argument(...)) -> None:
    """Migrate down to REVISION (``base`` drops everything)."""
    migrate.downgrade(get_engine(), revision)
    typer.echo(f"database at {migrate.current_revision(get_engine())}")


@db_app.command("current")
def current() -> None:
    """Print the current and head revisions."""
    typer.echo(f"current {migrate.current_revision(get_engine())} head {migrate.head_revision()}")
