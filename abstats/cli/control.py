"""``abstats experiments start|pause|resume|promote|rollback|weights|decisions``: manual control
from a shell, recorded as decisions with the actor ``cli``. Prints the decision id and reason."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from abstats.cli.experiments import experiments_app
from abstats.cli.main import fail, when
from abstats.db.engine import session_scope
from abstats.errors import AbstatsError

if TYPE_CHECKING:
    from abstats.db.models import Decision

# abstats.control.service (and the statistics below it) is imported by the commands, so that the
# rest of the CLI starts without scipy.

ACTOR = "cli"
REASON = typer.Option(None, "--reason", help="Why; stored on the decision.")
KEY = typer.Argument(..., help="Experiment key.")


def _echo(decision: Decision) -> None:
    typer.echo(
        f"decision {decision.id}: {decision.action} {decision.status_before} -> "
        f"{decision.status_after}, weights {decision.weights_after}; {decision.reason}"
    )


def _run(action: str, key: str, **kwargs: object) -> None:
    from abstats.control import service

    try:
        with session_scope() as session:
            decision = getattr(service, action)(session, key, actor=ACTOR, **kwargs)
            _echo(decision)
    except AbstatsError as exc:
        fail(exc.detail)


@experiments_app.command("start")
def start(key: str = KEY, reason: str | None = REASON) -> None:
    """draft -> running (with a ramp, the candidates start at the first step)."""
    _run("start", key, reason=reason)


@experiments_app.command("pause")
def pause(key: str = KEY, reason: str | None = REASON) -> None:
    """running -> paused: everything goes to the control until resume."""
    _run("pause", key, reason=reason)


@experiments_app.command("resume")
def resume(key: str = KEY, reason: str | None = REASON) -> None:
    """paused -> running, at the weights before the pause."""
    _run("resume", key, reason=reason)


@experiments_app.command("promote")
def promote(
    key: str = KEY,
    variant: str = typer.Argument(..., help="The variant to promote, e.g. v2."),
    reason: str | None = REASON,
) -> None:
    """Give VARIANT all traffic and conclude the experiment."""
    from abstats.control import service

    try:
        with session_scope() as session:
            _echo(service.promote(session, key, variant, actor=ACTOR, reason=reason))
    except AbstatsError as exc:
        fail(exc.detail)


@experiments_app.command("rollback")
def rollback(key: str = KEY, reason: str | None = REASON) -> None:
    """Give the control all traffic and end the experiment as rolled back."""
    _run("rollback", key, reason=reason)


@experiments_app.command("weights")
def weights(
    key: str = KEY,
    weights_json: str = typer.Argument(..., help='e.g. \'{"v1": 25, "v2": 75}\''),
    reason: str | None = REASON,
) -> None:
    """Set the weights by hand (a new weight epoch)."""
    from abstats.control import service

    try:
        parsed = json.loads(weights_json)
    except ValueError:
        fail(f'weights must be a JSON object like \'{{"v1": 25, "v2": 75}}\', got {weights_json!r}')
        return
    if not isinstance(parsed, dict):
        fail("weights must be a JSON object of variant -> weight")
        return
    try:
        with session_scope() as session:
            _echo(service.set_weights(session, key, parsed, actor=ACTOR, reason=reason))
    except AbstatsError as exc:
        fail(exc.detail)


@experiments_app.command("decisions")
def decisions(
    key: str = KEY, limit: int = typer.Option(20, min=1, max=100, help="How many, newest first.")
) -> None:
    """The audit trail, newest first, one line each."""
    from abstats.control import service

    try:
        with session_scope() as session:
            rows, _ = service.list_decisions(session, key, limit=limit, starting_after=None)
            for d in rows:
                applied = "" if d.applied else " (recommended)"
                typer.echo(
                    f"{d.id}\t{when(d.created_at)}\t{d.action}{applied}\t{d.actor}\t{d.reason}"
                )
    except AbstatsError as exc:
        fail(exc.detail)
