"""``abstats demo``: the main job end to end, on the embedded PostgreSQL by default.

1. starts ``abstats dev`` (API + scheduler in one process) as a subprocess with a short analysis
   interval, and waits for ``/readyz``;
2. creates an experiment with two real model versions (see ``abstats.demo.models``), a primary
   metric (accuracy), secondary F1 and AUC, guardrails on p95 latency and error rate, and a ramp;
3. starts it and simulates traffic through the REST API with the Python client: ``/assign`` for
   every arriving unit, predictions from the assigned model, true labels as delayed outcomes;
4. prints every decision the scheduler takes, until the experiment is concluded or rolled back;
5. prints where the report is and the commands to look further.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from abstats.client import Client
from abstats.demo.models import SCENARIOS, DemoData, Scenario, train_models
from abstats.demo.traffic import TrafficSimulator, utcnow
from abstats.engine import words

# Policy durations are compressed so that a whole ramp and promotion fit in about two minutes of
# real time; a production policy would say "1h" or "1d" where this says "15s".
DEMO_POLICY: dict[str, Any] = {
    "mode": "auto",
    "alpha": 0.05,
    "inference": "always_valid",
    "mde": "5%",
    "min_units_per_variant": 100,
    "min_events_per_variant": 100,
    "min_runtime": "20s",
    "promote": {"when": "primary_better", "min_lift": "0%"},
    "rollback": {"on_guardrail_breach": True, "on_primary_worse": True},
    "on_srm": "pause",
    "on_drift": "warn",
    "ramp": {"steps": [5, 25, 50, 100], "min_interval": "10s"},
    "cleanup": {"retire_losers": True},
}

DEMO_METRICS: list[dict[str, Any]] = [
    {
        "key": "f1",
        "kind": "classification",
        "measure": "f1",
        "label": "label",
        "role": "primary",
        "direction": "increase",
    },
    {
        "key": "accuracy",
        "kind": "classification",
        "measure": "accuracy",
        "label": "label",
        "role": "secondary",
        "direction": "increase",
    },
    {
        "key": "auc",
        "kind": "classification",
        "measure": "auc",
        "label": "label",
        "role": "secondary",
        "direction": "increase",
    },
    {
        "key": "latency_p95",
        "kind": "latency",
        "statistic": "p95",
        "role": "guardrail",
        "direction": "decrease",
        "margin": "10%",
    },
    {
        "key": "error_rate",
        "kind": "error_rate",
        "role": "guardrail",
        "direction": "decrease",
        "margin": 0.01,
    },
]


@dataclass
class DemoServer:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_server(data_dir: Path, port: int, *, analysis_interval: float) -> DemoServer:
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "demo-server.log"
    env = dict(os.environ)
    env.setdefault("ABSTATS_DATA_DIR", str(data_dir))
    env["ABSTATS_ANALYSIS_INTERVAL_SECONDS"] = str(analysis_interval)
    env.setdefault("ABSTATS_OUTBOX_INTERVAL_SECONDS", "1")
    env.setdefault("ABSTATS_LOG_JSON", "true")
    env.setdefault("ABSTATS_LOG_LEVEL", "INFO")
    log = log_path.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "abstats", "dev", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"abstats dev exited with {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return DemoServer(process, base_url, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit(f"abstats did not become ready within 60 s; see {log_path}")


def experiment_body(key: str, scenario: Scenario, models: Any) -> dict[str, Any]:
    return {
        "key": key,
        "name": f"Digit classifier v1 vs v2 ({scenario.name})",
        "description": scenario.description,
        "control": "v1",
        "variants": [
            {"key": m.key, "model_version": m.model_version, "metadata": m.metadata, "weight": 50}
            for m in models
        ],
        "metrics": DEMO_METRICS,
        "policy": DEMO_POLICY,
        "router": {"backend": "builtin"},
    }


def unused_key(client: Client, base: str) -> str:
    for n in range(1, 1000):
        key = base if n == 1 else f"{base}-{n}"
        if client.find_experiment(key) is None:
            return key
    raise SystemExit("too many demo experiments; remove the data dir to start afresh")


def announce_new(
    decisions: list[dict[str, Any]], seen: set[int], say: Callable[[str], None]
) -> None:
    """Print, oldest first, the decisions (listed newest first by the API) not printed yet."""
    for decision in reversed(decisions):
        if decision["id"] not in seen:
            seen.add(decision["id"])
            say(describe_decision(decision))


def _clock(stamp: str) -> str:
    """``HH:MM:SSZ`` (UTC, with its zone) of an ISO 8601 timestamp from the API."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%H:%M:%SZ")


def describe_decision(decision: dict[str, Any]) -> str:
    split = words.weights(decision.get("weights_after") or {})
    applied = "" if decision.get("applied", True) else " (recommended, not applied)"
    return (
        f"[{_clock(decision['created_at'])}] {decision['action']}{applied} by {decision['actor']}:"
        f" {decision['reason']}" + (f"  -> {split}" if split else "")
    )


FINAL_STATUSES = ("concluded", "rolled_back", "paused")


def simulate(
    client: Client,
    key: str,
    data: DemoData,
    *,
    duration: float,
    units_per_tick: int = 60,
    stop_when_final: bool = True,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
    """Traffic for ``key`` through the REST API for up to ``duration`` seconds of real time.

    Every tick: new and returning units are assigned by ``/assign``, each makes one to three
    requests scored by the assigned model (a prediction event each), and the true labels of
    earlier requests arrive as outcome events. Decisions are printed as the scheduler takes them;
    with ``stop_when_final`` the traffic stops once the experiment is concluded, rolled back or
    paused.
    """
    simulator = TrafficSimulator(data, outcome_delay=timedelta(seconds=2))
    seen: set[int] = set()
    started = time.monotonic()
    status = "running"
    last_poll = 0.0
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[units]} units, {task.fields[requests]} requests"),
        TextColumn("status {task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task(key, total=duration, units=0, requests=0, status=status)

        def say(line: str) -> None:
            if progress:  # above the bar, never hard-wrapped (piped output keeps whole lines)
                bar.console.print(line, soft_wrap=True, markup=False, highlight=False)
            else:
                echo(line)

        while time.monotonic() - started < duration:
            predictions, outcomes = simulator.tick(
                new_units=units_per_tick,
                now=utcnow(),
                assign=lambda units: client.assign_many(key, units),
            )
            for event in predictions:
                client.log_prediction(key, **_event_fields(event))
            for event in outcomes:
                client.log_outcome(key, **_event_fields(event))
            if time.monotonic() - last_poll >= 1.0:
                last_poll = time.monotonic()
                # status first: a decision commits with its status change, so the decisions read
                # next include the one that ended the experiment (read the other way round, a
                # promotion landing between the two reads was never printed)
                status = client.get_experiment(key)["status"]
                announce_new(client.decisions(key), seen, say)
            stats = simulator.stats
            bar.update(
                task,
                completed=time.monotonic() - started,
                units=stats.units,
                requests=stats.requests,
                status=status,
            )
            if stop_when_final and status in FINAL_STATUSES:
                break
            time.sleep(0.1)
    client.flush()
    stats = simulator.stats
    return {
        "status": status,
        "units": stats.units,
        "requests": stats.requests,
        "outcomes": stats.outcomes,
        "by_variant": dict(stats.by_variant),
        "seconds": round(time.monotonic() - started, 1),
    }


def _event_fields(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "type"}


def run_demo(
    scenario_name: str,
    *,
    data_dir: Path,
    port: int,
    time_limit: float = 150.0,
    analysis_interval: float = 2.0,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    url: str | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """The whole demo; returns a summary (key, final status, report path, traffic counts).

    Without ``url`` it starts ``abstats dev`` on ``port`` and stops it at the end; with ``url``
    it uses that running abstats (e.g. the docker-compose services) and ``api_key`` (default: the
    first admin key in ``data_dir``)."""
    scenario = SCENARIOS[scenario_name]
    echo(f"abstats demo, scenario '{scenario.name}': {scenario.description}")
    echo("training two real model versions on scikit-learn's digits dataset ...")
    data = train_models(scenario)
    server: DemoServer | None = None
    if url is None:
        echo(f"starting abstats (API + scheduler, analysis every {analysis_interval:g} s) ...")
        server = start_server(data_dir, port, analysis_interval=analysis_interval)
        url = server.base_url
    key_text = api_key or (data_dir / "admin-key").read_text().strip()
    try:
        with Client(url, key_text, flush_interval=0.5) as client:
            key = unused_key(client, f"digits-{scenario.name}")
            client.create_experiment(experiment_body(key, scenario, data.models))
            client.start_experiment(key, reason="demo start")
            echo(f"experiment '{key}' running; traffic through {url}; decisions:")
            result = simulate(client, key, data, duration=time_limit, echo=echo, progress=progress)
            if result["status"] not in FINAL_STATUSES:
                echo(f"time limit of {time_limit:.0f} s reached; the experiment is still running")
            final = client.get_experiment(key)
            client.run_analysis(key)  # a last snapshot with every event, and its report
    finally:
        if server is not None:
            server.stop()
    reports_dir = Path(os.environ.get("ABSTATS_REPORTS_DIR", "reports")).resolve()
    report = reports_dir / key / "index.html"
    admin_file = data_dir / "admin-key"
    echo("")
    winner = f", winner {final['winner']}" if final.get("winner") else ""
    echo(f"final status: {final['status']}{winner}")
    echo(
        f"traffic: {result['units']} units, {result['requests']} predictions, "
        f"{result['outcomes']} outcomes in {result['seconds']} s"
    )
    echo(f"report: {report}")
    echo("look further:")
    echo(f"  .venv/bin/abstats report {key} --format md --out -   # the report as Markdown")
    echo("  .venv/bin/abstats serve                        # the API on :8000, then:")
    echo(
        f'  curl -H "Authorization: Bearer $(cat {admin_file})" '
        f"localhost:8000/v1/experiments/{key}/decisions"
    )
    return {"key": key, "final_status": final["status"], "report": str(report), **result}
