"""The newcomer's path: `abstats serve` with no database configured boots the embedded
PostgreSQL from the pip wheel, migrates, answers /readyz, and survives kill -9 and restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.embedded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABSTATS_")}
    env.update(ABSTATS_DATA_DIR=str(data_dir), ABSTATS_LOG_JSON="false")
    return subprocess.Popen(
        [sys.executable, "-m", "abstats", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"abstats serve exited with {proc.returncode}:\n{out}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0)
            if r.status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"/readyz did not answer 200 within {timeout} s")


def test_serve_on_empty_data_dir_is_ready_and_survives_kill(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = _free_port()
    proc = _start(data_dir, port)
    try:
        elapsed = _wait_ready(port, proc)
        assert elapsed < 30
        key_file = data_dir / "admin-key"
        assert key_file.exists()
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        secret = key_file.read_text().strip()
        assert secret.startswith("abs_")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    # Restart on the same data dir: the server (still running after kill -9) is reused and the
    # first admin key is not recreated, because nothing was lost.
    proc = _start(data_dir, port)
    try:
        _wait_ready(port, proc)
        assert (data_dir / "admin-key").read_text().strip() == secret
        from abstats.db.embedded import embedded_database_url, stop_embedded

        engine = create_engine(embedded_database_url(data_dir))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM api_key")).scalar_one() == 1
        engine.dispose()
        stop_embedded(data_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
