"""``abstats scheduler`` (its own process) and ``abstats dev`` (API + scheduler in one)."""

from __future__ import annotations

import typer

from abstats.cli.main import app


@app.command()
def scheduler() -> None:
    """Run the scheduler: analysis, drift and outbox jobs (one leader among many processes)."""
    from abstats.db import migrate
    from abstats.db.engine import get_engine
    from abstats.scheduler.process import run_scheduler

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
