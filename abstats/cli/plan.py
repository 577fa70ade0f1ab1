"""``abstats plan``: units per variant and days to a decision before launch (flags, or
``-f FILE`` with the JSON body of ``POST /v1/plan``; flags override the file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import typer
from pydantic import ValidationError

from abstats.cli.main import app, fail


@app.command("plan")
def plan_command(
    file: Path | None = typer.Option(
        None, "--file", "-f", help="A JSON file with the request body of POST /v1/plan."
    ),
    kind: str | None = typer.Option(None, help="proportion, error_rate, mean, ratio, ..."),
    baseline: float | None = typer.Option(None, help="Control's rate (proportion) or mean."),
    sd: float | None = typer.Option(None, help="Per-unit standard deviation (not for rates)."),
    mde: str | None = typer.Option(None, help="Relative ('5%') or absolute (0.002)."),
    traffic: float | None = typer.Option(None, "--traffic", help="Units per day."),
    split: float | None = typer.Option(None, help="Candidate share in percent (default 50)."),
    ramp: str | None = typer.Option(None, help="Ramp steps in percent, e.g. '5,25,50'."),
    step_duration: str | None = typer.Option(None, help="Each ramp step's duration, e.g. '1d'."),
    candidates: int | None = typer.Option(None, help="Candidates besides the control."),
    inference: str | None = typer.Option(None, help="always_valid, group_sequential or fixed."),
    alpha: float | None = typer.Option(None, help="Significance level (default 0.05)."),
    power: float | None = typer.Option(None, help="Power to detect the MDE (default 0.8)."),
    looks: int | None = typer.Option(None, help="Analyses up to the planned sample."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Units per variant and days to a decision for a primary metric."""
    from abstats.engine import words
    from abstats.engine.plan import PlanRequest, plan
    from abstats.engine.specs import first_error

    body: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = orjson.loads(file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            fail(f"{file}: cannot read a JSON object ({exc})")
            return
        if not isinstance(loaded, dict):
            fail(f"{file}: expected a JSON object like the body of POST /v1/plan")
            return
        body.update(loaded)
    flags = {
        "kind": kind,
        "baseline": baseline,
        "sd": sd,
        "mde": mde,
        "traffic_per_day": traffic,
        "split": split,
        "candidates": candidates,
        "inference": inference,
        "alpha": alpha,
        "power": power,
        "looks": looks,
    }
    body.update({k: v for k, v in flags.items() if v is not None})
    if ramp is not None or step_duration is not None:
        ramp_body = dict(body.get("ramp") or {})
        if ramp is not None:
            try:
                ramp_body["steps"] = [float(s) for s in ramp.split(",") if s.strip()]
            except ValueError:
                fail(f"--ramp {ramp!r}: give shares in percent separated by commas, e.g. 5,25,50")
                return
        if step_duration is not None:
            ramp_body["step_duration"] = step_duration
        body["ramp"] = ramp_body
    try:
        request = PlanRequest.model_validate(body)
        result = plan(request)
    except ValidationError as exc:
        fail(first_error(exc))
        return
    except ValueError as exc:
        fail(str(exc))
        return
    if as_json:
        typer.echo(orjson.dumps(result.model_dump(mode="json")).decode())
        return
    typer.echo(result.summary)
    for step in result.steps:
        typer.echo(
            "  "
            + words.plan_step(
                step.candidate_share, step.days, step.control_units, step.units_per_candidate
            )
        )
