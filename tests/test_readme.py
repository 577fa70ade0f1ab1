"""The README's walkthrough runs as written.

Convention: inside the README section ``## Walkthrough`` every block fenced as ```sh is meant to
be run, in order, in one shell (blocks fenced without ``sh`` are shown, not run: starting the
server is the test's job). The test starts ``abstats dev`` (API + scheduler, as the walkthrough
says) on a free port and the test database, puts the environment's ``abstats`` on PATH (what
``. .venv/bin/activate`` does), points ``ABSTATS_URL`` at the server, and runs the blocks with
bash ``-e -u -o pipefail``; ``curl`` gets ``--fail-with-body`` so that an HTTP error fails the
run. Then it checks what the commands did.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import Engine, text

ROOT = Path(__file__).resolve().parents[1]


def walkthrough_blocks(readme: str) -> list[str]:
    section = readme.split("\n## Walkthrough\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dev_server(committed_engine: Engine, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = _free_port()
    env = dict(os.environ)
    env.update(
        ABSTATS_DATA_DIR=str(tmp_path / "data"),
        ABSTATS_REPORTS_DIR=str(tmp_path / "reports"),
        ABSTATS_LOG_JSON="false",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "abstats", "dev", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "abstats dev did not become ready"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield url, env
    finally:
        server.terminate()
        server.wait(30)
        log.close()


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl is not installed (.ci/system-packages installs it)"
)
def test_readme_walkthrough_runs_as_written(
    dev_server: tuple[str, dict[str, str]], committed_engine: Engine, tmp_path: Path
) -> None:
    url, env = dev_server
    blocks = walkthrough_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 4, "the walkthrough's sh blocks were not found"
    script = "\n".join(
        [
            "set -euo pipefail",
            'curl() { command curl --fail-with-body "$@"; echo; }',  # an HTTP error fails
            *blocks,
        ]
    )
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        ["bash", "-c", script],
        env={**env, "ABSTATS_URL": url},
        cwd=work,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    out = done.stdout
    assert "Traceback" not in done.stderr
    assert re.search(r"^abstats \d+\.\d+", out, flags=re.M)
    assert "created churn (draft)" in out
    assert '"accepted":3,"duplicates":0,"rejected":[]' in out
    lines = out.splitlines()
    assigned = orjson.loads(
        next(line for line in lines if line.startswith('{"experiment":"churn","variant"'))
    )
    assert assigned["variant"] in ("v1", "v2") and assigned["status"] == "running"
    listed = next(line for line in lines if line.startswith("churn\t"))
    assert listed.split("\t")[1:3] == ["running", "v1=95% v2=5%"]
    assert re.search(r"^\d+\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\tstart\tcli\t", out, flags=re.M)
    assert "# Churn model v2 (`churn`)" in out  # the Markdown report on stdout
    assert '"recommendation":"keep_running"' in out  # the analysis ran
    with committed_engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM experiment WHERE key = 'churn'")).scalar()
        events = [
            conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("exposure", "prediction", "outcome")
        ]
        snapshots = conn.execute(text("SELECT count(*) FROM analysis_snapshot")).scalar_one()
    assert status == "running"
    assert events[1:] == [1, 1] and events[0] >= 1  # (/assign may log its own exposure)
    assert snapshots >= 1
