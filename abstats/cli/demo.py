"""``abstats demo`` (the main job end to end) and ``abstats simulate`` (its traffic, on its own)."""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from abstats.cli.main import app
from abstats.config import get_settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@app.command()
def demo(
    scenario: str = typer.Option(
        "promote",
        help="promote (v2 is better: ramped up and promoted) or regression (v2 is "
        "slower: rolled back by the latency guardrail).",
    ),
    port: int = typer.Option(0, help="Port for the demo's API (0: a free one)."),
    time_limit: float = typer.Option(150.0, help="Stop the traffic after this many seconds."),
    analysis_interval: float = typer.Option(2.0, help="Seconds between scheduled analyses."),
    url: str = typer.Option(
        "",
        help="Use this running abstats (e.g. http://api:8000) instead of starting one; its "
        "scheduler should analyse every few seconds (ABSTATS_ANALYSIS_INTERVAL_SECONDS=2).",
    ),
    api_key: str = typer.Option(
        "", envvar="ABSTATS_API_KEY", help="Admin key for --url (default: DATA_DIR/admin-key)."
    ),
) -> None:
    """Start abstats (API + scheduler), run an experiment between two real models, print each
    decision as it happens and where the report is."""
    from abstats.demo.models import SCENARIOS
    from abstats.demo.runner import run_demo

    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"choose one of {', '.join(SCENARIOS)}", param_hint="--scenario")
    summary = run_demo(
        scenario,
        data_dir=Path(get_settings().data_dir),
        port=port or _free_port(),
        time_limit=time_limit,
        analysis_interval=analysis_interval,
        echo=typer.echo,
        url=url or None,
        api_key=api_key or None,
    )
    if summary["final_status"] not in ("concluded", "rolled_back"):
        raise typer.Exit(1)


@app.command()
def simulate(
    experiment: str = typer.Argument(..., help="Key of a running experiment with variants v1, v2."),
    url: str = typer.Option("http://127.0.0.1:8000", envvar="ABSTATS_URL", help="abstats API."),
    api_key: str = typer.Option(..., envvar="ABSTATS_API_KEY", help="An admin or ingest key."),
    scenario: str = typer.Option("promote", help="promote or regression (how v2 behaves)."),
    duration: float = typer.Option(120.0, help="Seconds of traffic."),
    units_per_tick: int = typer.Option(60, help="New units per tick (about ten ticks a second)."),
) -> None:
    """Post demo traffic (``/assign``, predictions, delayed outcomes) to a running abstats."""
    from abstats.client import Client
    from abstats.demo.models import SCENARIOS, train_models
    from abstats.demo.runner import simulate as run_traffic

    if scenario not in SCENARIOS:
        raise typer.BadParameter(f"choose one of {', '.join(SCENARIOS)}", param_hint="--scenario")
    data = train_models(SCENARIOS[scenario])
    with Client(url, api_key, flush_interval=0.5) as client:
        result = run_traffic(
            client,
            experiment,
            data,
            duration=duration,
            units_per_tick=units_per_tick,
            stop_when_final=False,
            echo=typer.echo,
        )
    typer.echo(
        f"{result['units']} units, {result['requests']} predictions, {result['outcomes']} "
        f"outcomes in {result['seconds']} s; experiment {result['status']}"
    )
