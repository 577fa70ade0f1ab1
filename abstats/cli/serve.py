"""``abstats serve``: migrations, first admin key, then the API under uvicorn."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from abstats import keys as key_service
from abstats.cli.main import app
from abstats.config import get_settings
from abstats.db import migrate
from abstats.db.engine import get_engine, session_scope
from abstats.logging import get_logger

_log = get_logger(__name__)


def prepare_database() -> None:
    """Wait for the database, migrate to head (under the advisory lock), ensure an admin key."""
    migrate.upgrade(get_engine())
    ensure_first_admin_key()


def ensure_first_admin_key() -> str | None:
    """On first start (no active keys) create an admin key and keep it in a 0600 file under the
    data dir. Only the file's path is logged: stdout and stderr end up in container logs."""
    settings = get_settings()
    with session_scope() as session:
        if key_service.count_active_keys(session) > 0:
            return None
        new = key_service.create_key(session, scope="admin", name="first admin key")
    path = Path(settings.data_dir) / "admin-key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a new file: O_EXCL with mode 0600 from its first byte
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(new.secret + "\n")
    os.chmod(path, 0o600)
    _log.info("created the first admin API key", key_id=new.id, secret_file=str(path))
    typer.echo(
        f"Created the first admin API key {new.id}; its secret is in {path} (mode 0600).",
        err=True,
    )
    return new.secret


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
    with_scheduler: bool = typer.Option(False, "--with-scheduler", help="Also run the scheduler."),
    workers: int = typer.Option(1, help="uvicorn worker processes (needs ABSTATS_DATABASE_URL)."),
) -> None:
    """Run the REST API."""
    import uvicorn

    prepare_database()
    if with_scheduler:
        from abstats.scheduler.process import start_background_scheduler

        start_background_scheduler()
    if workers > 1:
        uvicorn.run("abstats.api.asgi:app", host=host, port=port, workers=workers, log_config=None)
    else:
        from abstats.api.app import create_app

        uvicorn.run(create_app(), host=host, port=port, log_config=None, access_log=False)
