"""``abstats report EXPERIMENT [--format html|md|json] [--out DIR]``."""

from __future__ import annotations

from pathlib import Path

import typer

from abstats.cli.main import app


@app.command()
def report(
    experiment: str = typer.Argument(..., help="Experiment key."),
    fmt: str = typer.Option(
        "", "--format", "-f", help="html, md or json; default: write all three into --out."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Directory (default ABSTATS_REPORTS_DIR); '-' prints to stdout."
    ),
) -> None:
    """Build an experiment's report from its latest analysis and decisions."""
    from abstats.config import get_settings
    from abstats.db.engine import session_scope
    from abstats.errors import NotFound
    from abstats.reports import service

    formats = ("html", "md", "json")
    if fmt and fmt not in formats:
        raise typer.BadParameter("use html, md or json", param_hint="--format")
    try:
        with session_scope() as session:
            built = service.build(session, experiment)
    except NotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if out is not None and str(out) == "-":
        typer.echo(service.render(built, fmt or "md"))
        return
    directory = out or Path(get_settings().reports_dir)
    chosen = (fmt,) if fmt else formats
    service.write_report_files(built, directory, chosen)
    for name in chosen:
        typer.echo(str((directory / experiment / service.FILES[name]).resolve()))
