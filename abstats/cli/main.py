"""The root typer app and helpers shared by commands."""

from __future__ import annotations

import sys

import typer

from abstats.config import get_settings
from abstats.logging import configure_logging

app = typer.Typer(
    name="abstats",
    help="Statistical experiment analysis and auto-promotion for ML models in production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json and not sys.stderr.isatty())


def fail(message: str, code: int = 1) -> None:
    """Print a human message to stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
