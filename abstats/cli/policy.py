"""``abstats policy dry-run|replay KEY -f FILE``: what a policy file would decide, before it is
saved (``abstats.control.whatif``). Reads only; prints one line per decision, or ``--json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from abstats.cli.main import app, fail

policy_app = typer.Typer(help="Try a policy before saving it.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")

FILE = typer.Option(..., "--file", "-f", help="The policy as JSON ('-': standard input).")
AS_JSON = typer.Option(False, "--json", help="Print the whole result as JSON.")
KEY = typer.Argument(..., help="Experiment key.")


def _read(path: Path) -> Any:
    text = typer.get_text_stream("stdin").read() if str(path) == "-" else None
    try:
        text = text if text is not None else path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    try:
        return json.loads(text or "")
    except ValueError as exc:
        fail(f"{path} is not JSON: {exc}")


def _run(what: str, key: str, path: Path) -> dict[str, Any]:
    from abstats.control import whatif
    from abstats.db.engine import new_session
    from abstats.errors import AbstatsError, InvalidInput

    body = _read(path)
    with new_session() as session:
        try:
            result = (whatif.dry_run if what == "dry-run" else whatif.replay)(session, key, body)
            return result.as_dict()
        except InvalidInput as exc:
            for problem in exc.errors:
                typer.echo(f"{problem.field}: {problem.message}", err=True)
            fail(exc.detail, code=2)
        except AbstatsError as exc:
            fail(exc.detail)
        finally:
            session.rollback()  # nothing is written; this only ends the read transaction
    raise AssertionError("unreachable")


def _weights(weights: dict[str, float] | None) -> str:
    if not weights:
        return "-"
    total = sum(weights.values()) or 1.0
    return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in weights.items())


@policy_app.command("dry-run")
def dry_run(key: str = KEY, file: Path = FILE, as_json: bool = AS_JSON) -> None:
    """What the policy in FILE would decide on KEY's latest snapshot, as KEY is now."""
    data = _run("dry-run", key, file)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(
        f"snapshot {data['snapshot_id']} (cut-off {data['cutoff']}), {data['status']}, "
        f"{_weights(data['weights'])}"
    )
    after = f" -> {_weights(data['new_weights'])}" if data["new_weights"] else ""
    typer.echo(f"{data['action']}: {data['reason']}{after}")


@policy_app.command("replay")
def replay(key: str = KEY, file: Path = FILE, as_json: bool = AS_JSON) -> None:
    """The decisions the policy in FILE would have made over KEY's snapshots, and when."""
    data = _run("replay", key, file)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(
        f"{data['snapshots']} snapshots from {data['first_cutoff']} to {data['last_cutoff']}"
    )
    for d in data["decisions"]:
        note = "" if d["applied"] else " (recommended)"
        typer.echo(
            f"[{d['cutoff']}] {d['action']}{note}: {d['reason']}  -> {_weights(d['weights_after'])}"
        )
    typer.echo(f"final: {data['final_status']}, {_weights(data['final_weights'])}")
