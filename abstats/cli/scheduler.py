"""``abstats scheduler`` (its own process) and ``abstats dev`` (API + scheduler in one)."""

from __future__ import annotations

import typer

from abstats.cli.main import app


@app.command()
def scheduler(
    check: bool = typer.Option(
        False,
        "--check",
        help="Do not run: exit 0 when the database answers and a scheduler leads, else 1 "
        "(a healthcheck for containers).",
    ),
) -> None:
    """Run the scheduler: analysis, drift and outbox jobs (one leader among many processes)."""
    from abstats.db import migrate
    from abstats.db.engine import get_engine
    from abstats.scheduler.process import run_scheduler

    if check:
        from abstats.scheduler.leader import leader_present

        if not leader_present(get_engine()):
            typer.echo("no scheduler holds the leader lock", err=True)
            raise typer.Exit(1)
        typer.echo("a scheduler leads")
        return

    migrate.upgrade(get_engine())
    run_scheduler()


@app.command()
def dev(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
) -> None:
    """API and scheduler in one process, for a laptop (= serve --with-scheduler)."""
    from abstats.cli.serve import serve

    serve(host=host, port=port, with_scheduler=True, workers=1)
