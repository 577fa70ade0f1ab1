"""``abstats db upgrade|downgrade|current|stop|partitions``."""

from __future__ import annotations

from pathlib import Path

import typer

from abstats.cli.main import app
from abstats.db import migrate
from abstats.db.engine import get_engine

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(
    revision: str = typer.Argument("head", help="Target revision (default: the newest)."),
) -> None:
    """Migrate to REVISION (default head). Idempotent; safe when several processes run it."""
    migrate.upgrade(get_engine(), revision)
    typer.echo(f"database at {migrate.current_revision(get_engine())}")


@db_app.command("downgrade")
def downgrade(
    revision: str = typer.Argument(..., help="Target revision, or base for none."),
) -> None:
    """Migrate down to REVISION (``base`` drops everything)."""
    migrate.downgrade(get_engine(), revision)
    typer.echo(f"database at {migrate.current_revision(get_engine())}")


@db_app.command("current")
def current() -> None:
    """Print the current and head revisions."""
    typer.echo(f"current {migrate.current_revision(get_engine())} head {migrate.head_revision()}")


@db_app.command("stop")
def stop(
    data_dir: Path | None = typer.Option(
        None, help="The embedded server's data directory (default ABSTATS_DATA_DIR)."
    ),
) -> None:
    """Stop the embedded PostgreSQL under the data directory, whichever command started it."""
    from abstats.config import get_settings
    from abstats.db.embedded import stop_server

    directory = data_dir or Path(get_settings().data_dir)
    pid = stop_server(directory)
    if pid is None:
        typer.echo(f"no embedded PostgreSQL running under {directory}")
    else:
        typer.echo(f"stopped the embedded PostgreSQL under {directory} (pid {pid})")


@db_app.command("partitions")
def partitions(
    months_ahead: int = typer.Option(3, help="Create monthly partitions this far ahead."),
    since: str = typer.Option(
        "", help="Also create the months from YYYY-MM (e.g. before a backfill of old events)."
    ),
) -> None:
    """Create missing monthly partitions of the event tables and list them all."""
    from datetime import date

    from abstats.db.partitions import ensure_partitions, list_partitions

    start = None
    if since:
        try:
            year, month = (int(part) for part in since.split("-"))
            start = date(year, month, 1)
        except ValueError as exc:
            raise typer.BadParameter("use YYYY-MM, e.g. 2026-01", param_hint="--since") from exc
    with get_engine().begin() as conn:
        report = ensure_partitions(conn, months_ahead=months_ahead, start=start)
        rows = list_partitions(conn)
    for table, partition, estimate in rows:
        typer.echo(f"{table:<11} {partition:<24} ~{estimate} rows")
    typer.echo(f"created {len(report.created)}: {' '.join(report.created) or '-'}")
    if report.blocked:
        typer.echo(
            "left in the default partition (its rows fall in these months): "
            + " ".join(report.blocked)
        )
