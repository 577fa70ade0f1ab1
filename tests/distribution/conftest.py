"""Helpers for tests that install abstats (or its client) into a fresh virtual environment."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]


def run(
    args: list[str | Path],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run a command; fail the test with its output when it fails."""
    done = subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without abstats settings or a PYTHONPATH (nothing leaks from the test)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ABSTATS_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(extra)
    return env


def build_wheel(source: Path, out: Path) -> Path:
    """``pip wheel`` (isolated build, pip's cache) of the project at ``source``."""
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, source], timeout=300)
    (wheel,) = out.glob("*.whl")
    return wheel


def make_venv(path: Path) -> Path:
    """A fresh virtual environment (no packages, no pip: installs go through this pip's
    ``--python``); returns its python."""
    run([sys.executable, "-m", "venv", "--without-pip", path])
    return path / "bin" / "python"


def site_packages(python: Path) -> Path:
    out = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    return Path(out.stdout.strip())


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """An empty database (no schema) on the test server; dropped afterwards."""
    server = make_url(database_url)
    name = f"abstats_fresh_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
