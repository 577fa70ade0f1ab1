"""The embedded PostgreSQL belongs to the command that started it: when ``abstats dev`` ends
(SIGTERM, Ctrl-C) no PostgreSQL process of its data directory is left; a holder killed with
``kill -9`` does not keep the server alive after the next command ends; ``abstats db stop`` stops
it whoever holds it. (``make demo`` runs ``abstats dev`` as a child and ends it with SIGTERM.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from abstats.db.embedded import running_server_pid, stop_server

pytestmark = pytest.mark.embedded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTATS_")}
    env.update(ABSTATS_DATA_DIR=str(data_dir), ABSTATS_LOG_JSON="false")
    return env


def _dev(data_dir: Path) -> subprocess.Popen[bytes]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "abstats", "dev", "--port", str(port)],
        env=_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _started.append(proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("abstats dev did not become ready within 60 s")


def _postgres_of(data_dir: Path) -> list[int]:
    """Every process whose command line names this data directory's PostgreSQL."""
    pgdata = str((data_dir / "pg").resolve())
    found = []
    for process in psutil.process_iter(["pid", "name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and pgdata in cmdline:
            found.append(process.info["pid"])
    return found


def _end(proc: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    proc.send_signal(sig)
    return proc.wait(30)


_started: list[subprocess.Popen[bytes]] = []


@pytest.fixture(scope="module")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the module's tests: initdb runs once (each test starts and ends
    with no server running on it)."""
    return tmp_path_factory.mktemp("lifecycle") / "data"


@pytest.fixture
def data_dir(shared_data_dir: Path) -> Iterator[Path]:
    path = shared_data_dir
    assert running_server_pid(path) is None
    yield path
    for proc in _started:  # whatever a failed assertion left behind
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    _started.clear()
    for pid in _abstats_dev_of(path):  # an orphaned child of a demo
        psutil.Process(pid).kill()
    stop_server(path)


def test_dev_stops_its_postgres_on_sigterm_and_on_ctrl_c(data_dir: Path) -> None:
    proc = _dev(data_dir)
    server = running_server_pid(data_dir)
    assert server is not None and server in _postgres_of(data_dir)
    assert _end(proc, signal.SIGTERM) in (0, 143)
    assert running_server_pid(data_dir) is None
    assert _postgres_of(data_dir) == []

    proc = _dev(data_dir)
    assert running_server_pid(data_dir) is not None
    assert _end(proc, signal.SIGINT) in (0, 130)
    assert _postgres_of(data_dir) == []


def test_a_killed_holder_does_not_keep_it_running_and_db_stop_stops_it(data_dir: Path) -> None:
    proc = _dev(data_dir)
    _end(proc, signal.SIGKILL)  # no chance to let go
    assert running_server_pid(data_dir) is not None  # the server outlived it ...
    proc = _dev(data_dir)  # ... and the next command joins it, dropping the dead holder
    _end(proc, signal.SIGTERM)
    assert _postgres_of(data_dir) == []  # so the server ends with the last live holder

    proc = _dev(data_dir)
    _end(proc, signal.SIGKILL)
    assert running_server_pid(data_dir) is not None
    stopped = subprocess.run(
        [sys.executable, "-m", "abstats", "db", "stop"],
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("stopped the embedded PostgreSQL under")
    assert _postgres_of(data_dir) == []
    again = subprocess.run(
        [sys.executable, "-m", "abstats", "db", "stop"],
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.stdout.startswith("no embedded PostgreSQL running under")


def test_demo_interrupted_leaves_no_postgres(data_dir: Path) -> None:
    """``make demo`` (``abstats demo``) stopped by SIGTERM mid-run: its ``abstats dev`` child
    and that child's embedded PostgreSQL end with it."""
    pytest.importorskip("sklearn")  # the demo extra
    demo = subprocess.Popen(
        [sys.executable, "-m", "abstats", "demo", "--time-limit", "120"],
        env=_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=data_dir.parent,
    )
    assert demo.stdout is not None
    seen = []
    deadline = time.monotonic() + 90
    for line in demo.stdout:  # wait until traffic flows: the server and PostgreSQL are up
        seen.append(line)
        if "decisions:" in line:
            break
        assert time.monotonic() < deadline, "".join(seen)
    assert running_server_pid(data_dir) is not None, "".join(seen)
    demo.send_signal(signal.SIGTERM)
    demo.communicate(timeout=60)
    assert _postgres_of(data_dir) == []
    assert _abstats_dev_of(data_dir) == []  # nor its abstats dev child


def _abstats_dev_of(data_dir: Path) -> list[int]:
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline[-3:-2] != ["dev"] and "dev" not in cmdline:
            continue
        try:
            if process.environ().get("ABSTATS_DATA_DIR") == str(data_dir):
                found.append(process.info["pid"])
        except psutil.Error:
            continue
    return found
