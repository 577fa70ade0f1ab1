"""A real MLflow tracking server (sqlite backend, local artifacts) for the session.

The server runs from a virtualenv of its own under ``.pytest-mlflow/`` with the full ``mlflow``
package from PyPI (created on first use, about 1.5 min; reused afterwards), so that the server's
many dependencies stay out of abstats' environment: abstats itself needs only ``mlflow-skinny``.
"""

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
import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".pytest-mlflow" / "venv"
MLFLOW_REQUIREMENT = "mlflow>=3.1,<4"


def _mlflow_executable() -> Path:
    executable = VENV / "bin" / "mlflow"
    stamp = VENV / ".requirement"
    if executable.exists() and stamp.exists() and stamp.read_text() == MLFLOW_REQUIREMENT:
        return executable
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    installed = subprocess.run(
        [
            str(VENV / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            MLFLOW_REQUIREMENT,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, (
        f"pip install {MLFLOW_REQUIREMENT} failed: {installed.stderr[-3000:]}"
    )
    stamp.write_text(MLFLOW_REQUIREMENT)
    return executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tracking (and registry) URI of a running MLflow server."""
    executable = _mlflow_executable()
    data = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    log = (data / "server.log").open("w")
    process = subprocess.Popen(
        [
            str(executable), "server",
            "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
            "--artifacts-destination", str(data / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited: {(data / 'server.log').read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not answer /health within 180 s")
            time.sleep(0.5)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
