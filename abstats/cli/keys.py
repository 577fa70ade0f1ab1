"""``abstats keys create|list|revoke``: the secret is printed alone on the last line of stdout."""

from __future__ import annotations

import typer

from abstats import keys as key_service
from abstats.cli.main import app, fail, when
from abstats.db.engine import session_scope
from abstats.db.models import API_SCOPES

keys_app = typer.Typer(
    help="API keys: create (the secret is shown once), list, revoke.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create(
    scope: str = typer.Option(..., help="ingest | read | admin"),
    name: str = typer.Option("", help="A label for people."),
) -> None:
    """Create an API key and print its secret (shown once) on the last line."""
    if scope not in API_SCOPES:
        fail(f"--scope must be one of {', '.join(API_SCOPES)}, got {scope!r}")
    with session_scope() as session:
        new = key_service.create_key(session, scope=scope, name=name)
    typer.echo(f"# key id {new.id}, scope {new.scope}; the secret below is shown once", err=True)
    typer.echo(new.secret)


@keys_app.command("list")
def list_keys(
    all_keys: bool = typer.Option(False, "--all", help="Include revoked keys."),
) -> None:
    """One key per line, tab-separated: id, scope, created, last used, revoked, name. Secrets
    are never shown again (only their hashes are stored)."""
    with session_scope() as session:
        rows = key_service.list_keys(session, include_revoked=all_keys)
        typer.echo("id\tscope\tcreated\tlast_used\trevoked\tname")
        for key in rows:
            typer.echo(
                f"{key.id}\t{key.scope}\t{when(key.created_at)}\t{when(key.last_used_at)}\t"
                f"{when(key.revoked_at)}\t{key.name}"
            )


@keys_app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., help="The key's id (see `abstats keys list`)."),
) -> None:
    """Revoke the key with id KEY_ID (API processes stop accepting it within 10 s)."""
    with session_scope() as session:
        key_service.revoke_key(session, key_id)
    typer.echo(f"revoked {key_id}")
