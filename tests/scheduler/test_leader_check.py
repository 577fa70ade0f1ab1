"""``abstats scheduler --check`` (the compose healthcheck) sees whether a scheduler leads."""

from __future__ import annotations

from sqlalchemy import Engine
from typer.testing import CliRunner

from abstats.cli import app
from abstats.scheduler.leader import LeaderLock, leader_present


def test_check_sees_the_leader_lock(engine: Engine) -> None:
    runner = CliRunner()
    assert not leader_present(engine)
    missing = runner.invoke(app, ["scheduler", "--check"])
    assert missing.exit_code == 1
    assert "no scheduler holds the leader lock" in missing.stderr
    lock = LeaderLock(engine)
    assert lock.try_acquire()
    try:
        assert leader_present(engine)
        held = runner.invoke(app, ["scheduler", "--check"])
        assert held.exit_code == 0, held.output
        assert held.stdout.strip() == "a scheduler leads"
    finally:
        lock.release()
    assert not leader_present(engine)
