"""``abstats experiments list|show|create|apply``: the registry from a shell.

``create -f FILE`` and ``apply -f FILE`` take the body of ``POST /v1/experiments`` as YAML or JSON
(``-`` reads stdin). ``apply`` creates the experiment, or brings an existing one in line with the
file: name, description and metadata at any time; variants, metrics and control while it is a
draft (later only if unchanged); the policy at any time. Lifecycle and manual control commands
(start, pause, ...) are in ``abstats.cli.control``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import typer

from abstats.cli.main import app, fail, when
from abstats.db.engine import session_scope

experiments_app = typer.Typer(
    help="Experiments: list, show, create/apply from a file, lifecycle and manual control.",
    no_args_is_help=True,
)
app.add_typer(experiments_app, name="experiments")

FILE = typer.Option(
    ...,
    "--file",
    "-f",
    help="The experiment as YAML or JSON (the body of POST /v1/experiments); '-' for stdin.",
)


def read_body(file: str) -> Any:
    """The parsed file: JSON for ``.json``, YAML otherwise (YAML also reads JSON)."""
    import yaml

    name = "stdin" if file == "-" else file
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except FileNotFoundError:
        fail(f"{name}: no such file")
    except IsADirectoryError:
        fail(f"{name}: is a directory, not a file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{name}: not UTF-8 text (byte {exc.start}); save it as UTF-8")
    if not text.strip():
        fail(f"{name}: the file is empty; it should describe an experiment")
    if file.lower().endswith(".json"):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            fail(f"{name}: not valid JSON: {exc}")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        fail(f"{name}: not valid YAML{where}: {problem}")


def _invalid(exc: Any) -> None:
    """An InvalidInput: its one-line detail, then every field problem when there are several."""
    typer.echo(f"error: {exc.detail}", err=True)
    if len(exc.errors) > 1:
        for problem in exc.errors:
            typer.echo(f"  {problem.field}: {problem.message}", err=True)
    raise typer.Exit(2)


@experiments_app.command("list")
def list_experiments(
    status: str | None = typer.Option(None, help="Only experiments in this status."),
    as_json: bool = typer.Option(False, "--json", help="JSON lines, one experiment each."),
) -> None:
    """Every experiment, ordered by key: key, status, weights, updated (UTC), name."""
    from abstats.db.models import EXPERIMENT_STATUSES
    from abstats.experiments import service

    if status is not None and status not in EXPERIMENT_STATUSES:
        fail(f"--status must be one of {', '.join(EXPERIMENT_STATUSES)}, got {status!r}")
    if not as_json:
        typer.echo("key\tstatus\tweights\tupdated\tname")
    cursor: str | None = None
    with session_scope() as session:
        while True:
            page = service.list_experiments(
                session, limit=service.MAX_PAGE, starting_after=cursor, status=status
            )
            for exp in page.data:
                if as_json:
                    typer.echo(exp.model_dump_json())
                    continue
                weights = " ".join(f"{k}={100 * v:.0f}%" for k, v in exp.shares.items())
                typer.echo(
                    f"{exp.key}\t{exp.status}\t{weights or '-'}\t{when(exp.updated_at)}\t{exp.name}"
                )
            if not page.has_more:
                break
            cursor = page.next_cursor


@experiments_app.command("show")
def show(key: str = typer.Argument(..., help="Experiment key.")) -> None:
    """The experiment as JSON (what GET /v1/experiments/KEY answers)."""
    from abstats.experiments import service

    with session_scope() as session:
        read = service.read_experiment(session, key)
    typer.echo(orjson.dumps(read.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())


@experiments_app.command("create")
def create(file: str = FILE) -> None:
    """Create a draft experiment from FILE (fails if the key exists: use apply)."""
    from abstats.errors import InvalidInput
    from abstats.experiments import service
    from abstats.experiments.schemas import parse_create

    raw = read_body(file)
    try:
        body = parse_create(raw)
        with session_scope() as session:
            experiment = service.create_experiment(session, body)
            typer.echo(
                f"created {experiment.key} (draft); start it: abstats experiments start "
                f"{experiment.key}"
            )
    except InvalidInput as exc:
        _invalid(exc)


@experiments_app.command("apply")
def apply(file: str = FILE) -> None:
    """Create the experiment of FILE, or update it to match FILE (prints what changed)."""
    from abstats.errors import InvalidInput
    from abstats.experiments.schemas import parse_create

    raw = read_body(file)
    try:
        body = parse_create(raw)
        with session_scope() as session:
            typer.echo(_apply(session, body))
    except InvalidInput as exc:
        _invalid(exc)


def _apply(session: Any, body: Any) -> str:
    from abstats.control import service as control
    from abstats.experiments import repository, service
    from abstats.experiments.schemas import ExperimentUpdate

    if not repository.experiment_key_exists(session, body.key):
        service.create_experiment(session, body)
        return f"created {body.key} (draft)"
    experiment = repository.get_experiment(session, body.key, for_update=True)
    router = body.router.model_dump(mode="json")
    if router != dict(experiment.router):
        fail(
            f"{body.key}: the router cannot be changed after creation (stored: "
            f"{orjson.dumps(experiment.router).decode()}); create a new experiment"
        )
    notifications = (
        body.notifications.model_dump(mode="json", exclude_none=True) if body.notifications else {}
    )
    if notifications != dict(experiment.notifications or {}):
        fail(
            f"{body.key}: notifications cannot be changed after creation; create a new "
            "experiment, or keep the file's notifications as they were"
        )
    changes: dict[str, Any] = {}
    for field in ("name", "description", "metadata"):
        stored = experiment.metadata_ if field == "metadata" else getattr(experiment, field)
        if getattr(body, field) != stored:
            changes[field] = getattr(body, field)
    metrics = [m.model_dump(mode="json", exclude_none=True) for m in body.metrics]
    if metrics != list(experiment.metrics):
        changes["metrics"] = body.metrics
    if body.control != experiment.control_variant:
        changes["control"] = body.control
    stored_variants = [(v.key, v.model_version, v.metadata_) for v in experiment.variants]
    wanted_variants = [(v.key, v.model_version, v.metadata) for v in body.variants]
    # a draft's weights are part of the file; once it runs they belong to the policy and the
    # decisions, so only the variants themselves are compared (a change there is refused)
    if wanted_variants != stored_variants or (
        experiment.status == "draft" and _weights_differ(session, experiment, body)
    ):
        changes["variants"] = body.variants
    if changes:
        service.update_experiment(session, body.key, ExperimentUpdate(**changes))
    policy = body.policy.model_dump(mode="json")
    if policy != dict(experiment.policy):
        control.put_policy(session, body.key, policy)
        changes["policy"] = policy
    if not changes:
        return f"unchanged {body.key} ({experiment.status})"
    return f"updated {body.key} ({experiment.status}): {', '.join(changes)}"


def _weights_differ(session: Any, experiment: Any, body: Any) -> bool:
    from abstats.experiments import repository
    from abstats.experiments.service import declared_weights
    from abstats.experiments.state import validate_weights

    keys = [v.key for v in body.variants]
    wanted = validate_weights(declared_weights(body.variants), keys, field="variants")
    epoch = repository.current_epoch(session, experiment.id)
    stored = {k: float(v) for k, v in (epoch.weights if epoch else {}).items()}
    return wanted != stored
