"""``abstats keys create|revoke``: the secret is printed alone on the last line of stdout."""

from __future__ import annotations

import typer

from abstats.cli.main import app
from abstats.db.engine import session_scope
from abstats.experiments import keys as key_service

keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create(
    scope: str = typer.Option(..., help="ingest | read | admin"),
    name: str = typer.Option("", help="A label for people."),
) -> None:
    """Create an API key and print its secret (shown once) on the last line."""
    with session_scope() as session:
        new = key_service.create_key(session, scope=scope, name=name)
    typer.echo(f"# key id {new.id}, scope {new.scope}; the secret below is shown once", err=True)
    typer.echo(new.secret)


@keys_app.command("revoke")
def revoke(key_id: str) -> None:
    """Revoke the key with id KEY_ID."""
    with session_scope() as session:
        key_service.revoke_key(session, key_id)
    typer.echo(f"revoked {key_id}")
