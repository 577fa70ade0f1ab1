"""The built wheel works outside the checkout: it carries its migrations, and its ``abstats``
command migrates a fresh database and lists experiments.

The wheel is installed without dependencies into a fresh venv whose only other path is this
environment's site-packages (added by a ``.pth`` file, after the venv's own). A ``.pth`` line adds a
directory but runs none of its ``.pth`` files, so the checkout's editable install of abstats is not
importable there: the test asserts abstats is imported from the venv. Installing every dependency
from pip's cache would take minutes on CI's two cores; what this test is about (the wheel's own
files) does not need it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from abstats import __version__

from .conftest import ROOT, build_wheel, clean_env, make_venv, run, site_packages


def test_wheel_migrates_a_fresh_database_from_outside_the_checkout(
    tmp_path: Path, fresh_database: str
) -> None:
    wheel = build_wheel(ROOT, tmp_path / "dist")
    python = make_venv(tmp_path / "venv")
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel])
    import sqlalchemy

    ours = Path(sqlalchemy.__file__).resolve().parents[1]  # this environment's site-packages
    (site_packages(python) / "_deps.pth").write_text(f"{ours}\n")

    work = tmp_path / "elsewhere"  # not the checkout: nothing of it on sys.path
    work.mkdir()
    env = clean_env(
        ABSTATS_DATABASE_URL=fresh_database,
        ABSTATS_DATA_DIR=str(work / "data"),
        ABSTATS_LOG_JSON="false",
    )
    where = run(
        [
            python,
            "-c",
            "import abstats, abstats.db.migrate as m; print(abstats.__file__); "
            "print(m.migrations_dir())",
        ],
        env=env,
        cwd=work,
    ).stdout.split()
    assert where[0].startswith(str(tmp_path / "venv")), where
    assert where[1].startswith(str(tmp_path / "venv")), where  # the wheel's own migrations

    abstats = tmp_path / "venv" / "bin" / "abstats"
    assert run([abstats, "--version"], env=env, cwd=work).stdout.strip() == f"abstats {__version__}"
    upgraded = run([abstats, "db", "upgrade"], env=env, cwd=work)
    head = run([abstats, "db", "current"], env=env, cwd=work).stdout.split()
    assert head[1] == head[3] and head[1] != "None", head  # current == head
    assert upgraded.stdout.strip() == f"database at {head[3]}"
    listed = run([abstats, "experiments", "list"], env=env, cwd=work)
    assert listed.stdout.splitlines() == ["key\tstatus\tweights\tupdated\tname"]
    assert "Traceback" not in upgraded.stderr + listed.stderr
