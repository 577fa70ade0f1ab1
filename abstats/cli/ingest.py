"""``abstats ingest FILE``: backfill events from CSV, JSON lines or Parquet.

Each row is one event with the fields of ``POST /v1/events``. ``--experiment`` and ``--type``
fill ``experiment`` and ``type`` for rows that lack them; columns named ``features.<name>`` are
gathered into the ``features`` map (a ``features`` column holding a JSON object works too); rows
without a ``message_id`` get a deterministic one (file name and row number) so re-running the same
backfill stores nothing twice. Events go straight through the ingestion service into the
configured database, or with ``--url`` (and ``--api-key``) through the REST API.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from abstats.cli.main import app, fail

FORMATS = ("csv", "jsonl", "parquet")


def _format_of(path: Path, given: str | None) -> str:
    if given:
        return given
    suffix = "".join(path.suffixes[-2:]).lower()
    for fmt, endings in (
        ("csv", (".csv", ".csv.gz")),
        ("jsonl", (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz")),
        ("parquet", (".parquet", ".pq")),
    ):
        if any(suffix.endswith(e) for e in endings):
            return fmt
    fail(f"cannot tell the format of {path.name}; pass --format csv, jsonl or parquet")
    raise AssertionError  # fail() exits


def _clean(value: Any) -> Any:
    """pandas/numpy scalars -> JSON-able Python; missing (NaN/NA) -> None."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    return value


def _rows(path: Path, fmt: str) -> tuple[int, Iterator[dict[str, Any]]]:
    """(number of rows, the rows as dicts)."""
    if fmt == "jsonl":
        import gzip

        opener: Any = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            lines = [line for line in fh.read().split(b"\n") if line.strip()]

        def from_lines() -> Iterator[dict[str, Any]]:
            for number, line in enumerate(lines, start=1):
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    fail(f"{path.name} line {number} is not valid JSON: {exc}")

        return len(lines), from_lines()
    import pandas as pd

    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except ImportError:
            fail("reading Parquet needs pyarrow: pip install pyarrow")
    else:
        frame = pd.read_csv(path, dtype={"message_id": str, "unit_id": str, "request_id": str})
    columns = list(frame.columns)

    def from_frame() -> Iterator[dict[str, Any]]:
        for values in frame.itertuples(index=False, name=None):
            yield {c: _clean(v) for c, v in zip(columns, values, strict=True)}

    return len(frame), from_frame()


def _event(
    row: dict[str, Any], *, experiment: str | None, kind: str | None, source_id: str, number: int
) -> dict[str, Any]:
    event: dict[str, Any] = {}
    features: dict[str, Any] = {}
    for name, value in row.items():
        if name.startswith("features."):
            if value is not None:
                features[name.removeprefix("features.")] = value
        elif value is not None:
            event[name] = value
    if isinstance(event.get("features"), str):
        event["features"] = orjson.loads(event["features"])
    if features:
        event["features"] = {**(event.get("features") or {}), **features}
    if experiment and "experiment" not in event:
        event["experiment"] = experiment
    if kind and "type" not in event:
        event["type"] = kind
    if "error" in event and isinstance(event["error"], int | float):
        event["error"] = bool(event["error"])
    if "message_id" not in event:
        event["message_id"] = f"{source_id}-{number}"
    return event


@app.command()
def ingest(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="CSV, JSON lines or Parquet."
    ),
    experiment: str | None = typer.Option(None, help="Experiment key for rows without one."),
    event_type: str | None = typer.Option(
        None, "--type", help="exposure | prediction | outcome, for rows without a 'type'."
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="csv | jsonl | parquet (default: by suffix)."
    ),
    batch_size: int = typer.Option(1000, min=1, help="Events per batch."),
    strict: bool = typer.Option(False, help="Stop at the first batch with an invalid event."),
    url: str | None = typer.Option(
        None, envvar="ABSTATS_URL", help="Post through this API instead of writing to the database."
    ),
    api_key: str | None = typer.Option(
        None, envvar="ABSTATS_API_KEY", help="With --url: an ingest key."
    ),
) -> None:
    """Backfill events from FILE; prints accepted, duplicates and rejected counts."""
    if fmt is not None and fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}")
    if event_type is not None and event_type not in ("exposure", "prediction", "outcome"):
        fail("--type must be exposure, prediction or outcome")
    if url and not api_key:
        fail("--url needs --api-key (or ABSTATS_API_KEY) with scope ingest")
    total, rows = _rows(file, _format_of(file, fmt))
    source_id = "file-" + hashlib.sha256(file.name.encode()).hexdigest()[:12]
    send = _sender(url, api_key, strict)
    accepted = duplicates = rejected = 0
    problems: list[str] = []
    batch: list[dict[str, Any]] = []
    first_row = 1
    with Progress(
        TextColumn("ingest"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} rows"),
        TimeRemainingColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task("ingest", total=total)
        for number, row in enumerate(rows, start=1):
            batch.append(
                _event(
                    row, experiment=experiment, kind=event_type, source_id=source_id, number=number
                )
            )
            if len(batch) >= batch_size or number == total:
                result = send(batch)
                accepted += result["accepted"]
                duplicates += result["duplicates"]
                rejected += len({r["index"] for r in result["rejected"]})
                for r in result["rejected"]:
                    if len(problems) < 20:
                        problems.append(
                            f"row {first_row + r['index']}: {r['field'].split('.', 1)[-1]}: {r['message']}"
                        )
                progress.advance(task, len(batch))
                first_row += len(batch)
                batch = []
    for line in problems:
        typer.echo(line, err=True)
    typer.echo(f"accepted {accepted} duplicates {duplicates} rejected {rejected}")
    if rejected:
        raise typer.Exit(2)


def _sender(url: str | None, api_key: str | None, strict: bool) -> Any:
    from abstats.errors import InvalidInput

    if url:
        from abstats.client import ApiError, Client

        client = Client(url, api_key or "")

        def post(batch: list[dict[str, Any]]) -> dict[str, Any]:
            try:
                result: dict[str, Any] = client.post_events(batch, strict=strict)
            except ApiError as exc:
                fail(exc.detail)
            return result

        return post

    from abstats.db.engine import session_scope
    from abstats.ingest.service import ingest_events

    def write(batch: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            with session_scope() as session:
                return ingest_events(session, batch, strict=strict).as_dict()
        except InvalidInput as exc:
            fail(exc.detail)
            raise

    return write
