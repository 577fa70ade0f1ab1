"""Benchmark: GET /v1/experiments/{key}/assign against the limit, a constant-JSON endpoint of the
same app in the same API process.

    .venv/bin/python tests/perf/bench_assign.py               # 8 s per phase
    .venv/bin/python tests/perf/bench_assign.py --seconds 3   # shorter

1. Creates a scratch database on the local PostgreSQL (``--server``, default
   postgresql://postgres@127.0.0.1:5432/postgres), migrates it, registers a running experiment
   and an ingest key.
2. Starts the API as a subprocess (uvicorn, one worker, the real app from ``create_app`` plus one
   route, ``GET /bench/constant``, that returns a constant JSON body of the same size as an
   assignment: the physical limit of the HTTP stack and the framework on this machine).
3. A separate load-generator process drives both endpoints with ``--connections`` keep-alive
   HTTP/1.1 connections (closed loop) for ``--seconds`` each: requests/s, p50, p99. Every /assign
   request uses a new unit id, so every request buffers an exposure for the writer process.
4. Open loop at half the maximum /assign rate: requests are scheduled at fixed times and latency
   is measured from the scheduled time (no coordinated omission): p50, p99. The constant
   endpoint is driven the same way at the same rate: the machine's own tail latency.
5. Prints the figures, the ratio /assign : limit (target >= 0.8) and p99 at half rate (target
   < 10 ms), and checks that the exposures reached the database.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CONSTANT = {
    "experiment": "bench",
    "variant": "v2",
    "model_version": "xgb-2.0",
    "weights_epoch": 1,
    "status": "running",
    "forced": False,
}


def bench_app() -> Any:
    """uvicorn factory: the real app plus the constant-JSON route (the limit)."""
    from abstats.api.app import create_app
    from abstats.api.responses import JsonResponse

    app = create_app()

    @app.get("/bench/constant")
    async def constant() -> JsonResponse:
        return JsonResponse(CONSTANT)

    return app


# --- load generation (runs in its own process) ---------------------------------------------------


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> None:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace").splitlines()[0])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)


def _raw(path: str, secret: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {secret}\r\n\r\n".encode()


def _paths(kind: str) -> Any:
    prefix = uuid.uuid4().hex[:8]
    i = 0
    while True:
        i += 1
        yield (
            "/bench/constant"
            if kind == "constant"
            else f"/v1/experiments/bench/assign?unit_id={prefix}-{i}"
        )


async def _closed_loop(
    port: int, kind: str, secret: str, connections: int, seconds: float
) -> dict[str, Any]:
    paths = _paths(kind)
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await _request(reader, writer, _raw(next(paths), secret))
            latencies.append(time.perf_counter() - t0)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "rps": len(latencies) / elapsed, **_quantiles(latencies)}


async def _open_loop(
    port: int, kind: str, secret: str, rate: float, seconds: float, pool_size: int
) -> dict[str, Any]:
    paths = _paths(kind)
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(pool_size):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    tasks = []

    async def one(scheduled: float) -> None:
        conn = await pool.get()
        try:
            await _request(conn[0], conn[1], _raw(next(paths), secret))
        finally:
            pool.put_nowait(conn)
        latencies.append(time.perf_counter() - scheduled)  # from the scheduled time

    start = time.perf_counter() + 0.05
    total = int(rate * seconds)
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    achieved = total / (time.perf_counter() - start)
    return {
        "requests": total,
        "target_rps": rate,
        "achieved_rps": achieved,
        **_quantiles(latencies),
    }


def _quantiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    if not ordered:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99)}


def _load_process(job: dict[str, Any], out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if job["mode"] == "closed":
        result = asyncio.run(
            _closed_loop(
                job["port"], job["kind"], job["secret"], job["connections"], job["seconds"]
            )
        )
    else:
        result = asyncio.run(
            _open_loop(
                job["port"],
                job["kind"],
                job["secret"],
                job["rate"],
                job["seconds"],
                job["connections"],
            )
        )
    out.put(result)


def run_load(**job: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    process = ctx.Process(target=_load_process, args=(job, out))
    process.start()
    result: dict[str, Any] = out.get(timeout=job["seconds"] + 120)
    process.join(timeout=30)
    return result


# --- setup --------------------------------------------------------------------------------------


def _cpu(pid: int) -> tuple[float, float] | None:
    """CPU seconds (user + system) of process ``pid`` and of its live child processes, from
    /proc (Linux; None elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK")

    def own(p: int) -> float:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

    try:
        children = [
            int(c)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()
        ]
        return own(pid), sum(own(c) for c in children)
    except (OSError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--server",
        default=os.environ.get(
            "ABSTATS_BENCH_SERVER", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each phase")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    server = make_url(args.server.replace("postgresql://", "postgresql+psycopg2://", 1))
    name = f"abstats_bench_assign_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    api: subprocess.Popen[bytes] | None = None
    try:
        os.environ["ABSTATS_DATABASE_URL"] = url
        from abstats.config import get_settings
        from abstats.control import service
        from abstats.db import migrate
        from abstats.db.engine import get_engine, reset_engine
        from abstats.experiments.schemas import parse_create
        from abstats.experiments.service import create_experiment
        from abstats.keys import create_key

        get_settings.cache_clear()
        reset_engine()
        engine = get_engine()
        migrate.upgrade(engine)
        with Session(engine) as session, session.begin():
            create_experiment(
                session,
                parse_create(
                    {
                        "key": "bench",
                        "name": "assign benchmark",
                        "control": "v1",
                        "variants": [
                            {"key": "v1", "model_version": "xgb-1.0"},
                            {"key": "v2", "model_version": "xgb-2.0"},
                        ],
                        "metrics": [
                            {
                                "key": "conversion",
                                "kind": "proportion",
                                "outcome": "converted",
                                "role": "primary",
                                "direction": "increase",
                            }
                        ],
                        "policy": {"ramp": {"steps": [25, 50, 100]}},
                    }
                ),
            )
            secret = create_key(session, scope="ingest").secret
            service.start(session, "bench", actor="key:bench")

        port = _free_port()
        env = {**os.environ, "ABSTATS_DATABASE_URL": url, "ABSTATS_LOG_LEVEL": "WARNING"}
        api = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "bench_assign:bench_app",
                "--app-dir",
                str(Path(__file__).parent),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=env,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or api.poll() is not None:
                    raise RuntimeError("the API did not start") from None
                time.sleep(0.1)

        common = {"port": port, "secret": secret, "connections": args.connections}
        run_load(
            mode="closed", kind="assign", seconds=1.0, **common
        )  # warm-up (caches, JIT-free paths)
        run_load(mode="closed", kind="constant", seconds=1.0, **common)
        cpu_before = _cpu(api.pid)
        limit = run_load(mode="closed", kind="constant", seconds=args.seconds, **common)
        cpu_limit = _cpu(api.pid)
        assign = run_load(mode="closed", kind="assign", seconds=args.seconds, **common)
        cpu_assign = _cpu(api.pid)
        half = run_load(
            mode="open", kind="assign", seconds=args.seconds, rate=assign["rps"] / 2, **common
        )
        # the limit's own tail at the same rate: this machine's floor for the p99 target
        half_limit = run_load(
            mode="open", kind="constant", seconds=args.seconds, rate=assign["rps"] / 2, **common
        )
        time.sleep(1.5)  # let the exposure writer drain
        with engine.connect() as conn:
            exposures = conn.execute(text("SELECT count(*) FROM exposure")).scalar_one()

        ratio = assign["rps"] / limit["rps"]
        print(
            f"\n/assign benchmark: {args.connections} connections, 1 uvicorn worker, {os.cpu_count()} CPUs, {args.seconds:g} s per phase"
        )
        print(f"{'':28}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
        print(
            f"{'constant JSON (limit)':28}{limit['rps']:>10.0f}{limit['p50_ms']:>10.2f}{limit['p99_ms']:>10.2f}"
        )
        print(
            f"{'/assign':28}{assign['rps']:>10.0f}{assign['p50_ms']:>10.2f}{assign['p99_ms']:>10.2f}"
        )
        print(
            f"{'/assign open loop @ 1/2 max':28}{half['achieved_rps']:>10.0f}{half['p50_ms']:>10.2f}{half['p99_ms']:>10.2f}"
        )
        print(
            f"{'constant open loop, same rate':28}{half_limit['achieved_rps']:>10.0f}{half_limit['p50_ms']:>10.2f}{half_limit['p99_ms']:>10.2f}"
        )
        print(f"ratio /assign : limit = {ratio:.2f} (target >= 0.80)")
        if cpu_before is not None and cpu_limit is not None and cpu_assign is not None:
            # CPU per request of the API process (and, apart, of its children: the exposure
            # writer): unlike req/s, hardly moved by other load on the machine
            api_limit = (cpu_limit[0] - cpu_before[0]) / limit["requests"] * 1e6
            api_assign = (cpu_assign[0] - cpu_limit[0]) / assign["requests"] * 1e6
            children = (cpu_assign[1] - cpu_limit[1]) / assign["requests"] * 1e6
            print(
                f"API process CPU per request: constant {api_limit:.0f} us, /assign "
                f"{api_assign:.0f} us (ratio {api_limit / api_assign:.2f}); its child processes "
                f"(exposure writer) {children:.0f} us per /assign request"
            )
        print(f"p99 at half the maximum rate = {half['p99_ms']:.2f} ms (target < 10 ms)")
        print(
            f"exposures written by the exposure writer: {exposures} "
            f"(requests with a new unit id: {assign['requests'] + half['requests']} + warm-up)"
        )
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=15)
        from abstats.db.engine import reset_engine

        reset_engine()
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


if __name__ == "__main__":
    main()
