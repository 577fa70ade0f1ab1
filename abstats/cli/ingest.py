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
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
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


@dataclass
class Table:
    """A parsed file: its columns, row count, the rows as dicts and a column's distinct values."""

    columns: list[str]
    total: int
    rows: Callable[[], Iterator[dict[str, Any]]]
    distinct: Callable[[str], set[str]]


def _rows(path: Path, fmt: str) -> Table:
    """The whole file is read and parsed here, so a malformed file fails with one line before
    any row is sent."""
    name = path.name
    if fmt == "jsonl":
        import gzip

        opener: Any = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rb") as fh:
                lines = [line for line in fh.read().split(b"\n") if line.strip()]
        except (OSError, EOFError) as exc:  # e.g. a .gz that is not gzip
            fail(f"{name} cannot be read: {exc}")
        parsed: list[dict[str, Any]] = []
        seen: dict[str, None] = {}
        for number, line in enumerate(lines, start=1):
            try:
                line.decode("utf-8")
                row = orjson.loads(line)
            except UnicodeDecodeError as exc:
                fail(f"{name} line {number} is not UTF-8 text (byte {exc.start}); save it as UTF-8")
            except orjson.JSONDecodeError as exc:
                fail(f"{name} line {number} is not valid JSON: {exc}")
            if not isinstance(row, dict):
                fail(f"{name} line {number} is not a JSON object (one event per line)")
            parsed.append(row)
            seen.update(dict.fromkeys(row))
        return Table(
            columns=list(seen),
            total=len(parsed),
            rows=lambda: iter(parsed),
            distinct=lambda c: {str(r[c]) for r in parsed if r.get(c) is not None},
        )
    import pandas as pd

    if fmt == "parquet":
        try:
            frame = pd.read_parquet(path)
        except ImportError:
            fail("reading Parquet needs pyarrow: pip install pyarrow")
        except Exception as exc:  # pyarrow's ArrowInvalid and friends
            fail(f"{name} is not a readable Parquet file: {str(exc).splitlines()[0]}")
    else:
        try:
            frame = pd.read_csv(path, dtype={"message_id": str, "unit_id": str, "request_id": str})
        except pd.errors.EmptyDataError:
            fail(f"{name} is empty: expected a header line and one event per row")
        except UnicodeDecodeError as exc:
            fail(f"{name} is not UTF-8 text (byte {exc.start}); save it as UTF-8")
        except pd.errors.ParserError as exc:
            fail(f"{name} is not valid CSV: {str(exc).strip().splitlines()[-1]}")
    columns = [str(c) for c in frame.columns]

    def from_frame() -> Iterator[dict[str, Any]]:
        for values in frame.itertuples(index=False, name=None):
            yield {c: _clean(v) for c, v in zip(columns, values, strict=True)}

    def distinct(column: str) -> set[str]:
        if column not in frame.columns:
            return set()
        return {str(v) for v in frame[column].dropna().unique()}

    return Table(columns=columns, total=len(frame), rows=from_frame, distinct=distinct)


def _check_shape(
    name: str, columns: list[str], *, experiment: str | None, event_type: str | None
) -> None:
    """The columns the rows need, once for the file (not one rejection per row)."""
    import difflib

    from abstats.ingest.validate import ALLOWED_FIELDS

    known = set().union(*ALLOWED_FIELDS.values())
    unknown = [c for c in columns if c not in known and not c.startswith("features.")]
    if unknown:
        hints = []
        for column in unknown:
            close = difflib.get_close_matches(column, sorted(known), n=1)
            hints.append(f"{column!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        fail(
            f"{name}: unknown column(s) {', '.join(hints)}; event fields are "
            f"{', '.join(sorted(known))} and features.<name>"
        )
    if "unit_id" not in columns:
        fail(f"{name} has no unit_id column (columns: {', '.join(columns) or 'none'})")
    if "type" not in columns and not event_type:
        fail(f"{name} has no 'type' column: pass --type exposure, prediction or outcome")
    if "experiment" not in columns and not experiment:
        fail(f"{name} has no 'experiment' column: pass --experiment KEY")


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
    table = _rows(file, _format_of(file, fmt))
    total = table.total
    if total == 0:
        fail(f"{file.name} has no rows to ingest")
    _check_shape(file.name, table.columns, experiment=experiment, event_type=event_type)
    experiments = table.distinct("experiment")
    if experiment:
        experiments.add(experiment)  # rows without an experiment get it
    _check_experiments(file.name, experiments, table.distinct("variant"), url, api_key)
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
        console=Console(stderr=True),
        disable=not sys.stderr.isatty(),
        transient=True,
    ) as progress:
        task = progress.add_task("ingest", total=total)
        for number, row in enumerate(table.rows(), start=1):
            batch.append(
                _event(
                    row, experiment=experiment, kind=event_type, source_id=source_id, number=number
                )
            )
            if len(batch) >= batch_size or number == total:
                result = send(batch)
                _stop_if_no_experiment(file.name, batch, result, first_row, accepted)
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
    if rejected > len(problems):
        problems.append(f"... {rejected} rows rejected in all; the first problems are above")
    for line in problems:
        typer.echo(line, err=True)
    typer.echo(f"accepted {accepted} duplicates {duplicates} rejected {rejected}")
    if rejected:
        raise typer.Exit(2)


def _stop_if_no_experiment(
    name: str, batch: list[dict[str, Any]], result: dict[str, Any], first_row: int, before: int
) -> None:
    """Every row of a batch refused for its experiment (e.g. through --url with an ingest key,
    which cannot look experiments up beforehand): one line, not one rejection per row."""
    refused = [r for r in result["rejected"] if str(r["field"]).endswith(".experiment")]
    if refused and len({r["index"] for r in refused}) == len(batch):
        fail(
            f"{name} row {first_row + refused[0]['index']}: {refused[0]['message']}; stopped "
            f"there ({before} rows accepted before it)"
        )


def _check_experiments(
    name: str, keys: set[str], variants: set[str], url: str | None, api_key: str | None
) -> None:
    """Every experiment the file names exists, and every variant is one of theirs: checked once,
    so an unknown key is one line, not one rejection per row."""
    known_variants: set[str] = set()
    missing: list[str] = []
    if url:
        from abstats.client import ApiError, Client

        with Client(url, api_key or "", flush_interval=3600) as client:
            for key in sorted(keys):
                try:
                    found = client.find_experiment(key)
                except ApiError as exc:
                    if exc.status in (401, 403):
                        return  # an ingest key cannot read experiments: the server checks rows
                    fail(exc.detail)
                if found is None:
                    missing.append(key)
                else:
                    known_variants.update(v["key"] for v in found["variants"])
    else:
        from abstats.db.engine import session_scope
        from abstats.experiments.repository import experiment_refs

        with session_scope() as session:
            refs = experiment_refs(session, sorted(keys))
        missing = sorted(keys - set(refs))
        for _, by_key in refs.values():
            known_variants.update(by_key)
    if missing:
        fail(
            f"{name}: unknown experiment(s) {', '.join(repr(k) for k in missing)}; create it "
            "first (abstats experiments create -f FILE) or fix --experiment / the experiment column"
        )
    strangers = sorted(variants - known_variants)
    if strangers:
        fail(
            f"{name}: unknown variant(s) {', '.join(repr(v) for v in strangers[:10])}; the "
            f"experiment(s) have {', '.join(sorted(known_variants))}"
        )


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
