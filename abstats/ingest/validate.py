"""Bulk validation of events (docs/events.md) into rows ready for COPY.

Hand-written checks instead of a pydantic model per event: this runs for every event on the
ingest hot path, and plain type tests on dicts are several times faster than model construction.
Every problem is reported with its field path (``events[3].latency_ms``) and what to fix; an event
with problems is rejected as a whole, the others are kept.

Field rules (also in README.md, section Events):
- ``type``: exposure | prediction | outcome. ``message_id``, ``experiment``, ``unit_id``: required.
- ids (``message_id``, ``unit_id``, ``request_id``): non-empty strings (integers are accepted and
  turned into strings), at most ``max_string_length`` characters.
- ``timestamp``: ISO 8601 (no offset means UTC) or Unix seconds; not before 2000-01-01 and at most
  ``future_tolerance_seconds`` in the future; absent means the time the server received it.
- numbers must be finite JSON numbers (not strings, not booleans); ``latency_ms`` >= 0.
- ``features``: flat object, name -> number or string, at most ``max_features`` entries.
- unknown fields are rejected (a typo such as ``latency`` must not silently lose data).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from abstats.config import Settings
from abstats.engine.specs import NAME_PATTERN

EVENT_TYPES = ("exposure", "prediction", "outcome")
_COMMON = ("type", "message_id", "experiment", "unit_id", "timestamp")
ALLOWED_FIELDS: dict[str, frozenset[str]] = {
    "exposure": frozenset((*_COMMON, "variant")),
    "prediction": frozenset(
        (
            *_COMMON,
            "variant",
            "request_id",
            "score",
            "label",
            "value",
            "latency_ms",
            "error",
            "features",
        )
    ),
    "outcome": frozenset((*_COMMON, "request_id", "name", "value")),
}
_FIELD_HINTS = {
    ("outcome", "variant"): "outcomes are not tied to a variant: they join to predictions by "
    "request_id, else to the unit's exposure; remove 'variant'",
}
_NAME_RE = re.compile(NAME_PATTERN)
# The shape of an experiment key (the experiment table's check constraint): only such strings
# are looked up, so no text the database refuses (e.g. a NUL) ever reaches a query.
_EXPERIMENT_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_PLAIN_ISO = re.compile(
    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?(?:Z|[+-]\d\d(?::\d\d)?)?"
)

# Row layouts, in COPY column order (see ``abstats.ingest.repository``).
ExposureRow = tuple[int, int, str, str, str, str]  # experiment, variant, unit, ts, message, source
PredictionRow = tuple[
    int,
    int,
    str,
    str | None,
    str,
    float | None,
    float | None,
    float | None,
    float | None,
    bool,
    str | None,
    str,
]  # experiment, variant, unit, request, ts, score, label, value, latency, error, features, message
OutcomeRow = tuple[
    int, str, str | None, str, float, str, str
]  # exp, unit, req, name, value, ts, msg


class Unparseable:
    """Placeholder for an NDJSON line that is not JSON; rejected with ``reason``."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


@dataclass
class Rejection:
    index: int
    message_id: str | None
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "message_id": self.message_id,
            "field": self.field,
            "message": self.message,
        }


@dataclass
class ValidatedBatch:
    exposures: list[ExposureRow] = field(default_factory=list)
    predictions: list[PredictionRow] = field(default_factory=list)
    outcomes: list[OutcomeRow] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    rejected_events: int = 0
    # the ``ts`` text given to events without a timestamp (the batch's server time), if any:
    # their identity is the message id alone (``abstats.ingest.repository``)
    stamped: str | None = None

    @property
    def valid_events(self) -> int:
        return len(self.exposures) + len(self.predictions) + len(self.outcomes)


ExperimentRefs = dict[str, tuple[int, dict[str, int]]]
# Resolves experiment keys -> (id, {variant key: id}); ``refresh`` forces a re-read of those keys.
RefResolver = Callable[[set[str], set[str] | None], ExperimentRefs]


class _EventChecker:
    """Checks one event at a time, collecting (field, message) problems."""

    def __init__(self, settings: Settings, now: datetime) -> None:
        self.max_len = settings.max_string_length
        self.max_features = settings.max_features
        self.latest = now + timedelta(seconds=settings.future_tolerance_seconds)
        self.tolerance_text = _human_seconds(settings.future_tolerance_seconds)
        self.now_text = now.isoformat()
        self.stamped = False  # some event had no timestamp and got ``now_text``
        self.problems: list[tuple[str, str]] = []

    def problem(self, name: str, message: str) -> None:
        self.problems.append((name, message))

    def ident(self, event: dict[str, Any], name: str, *, required: bool) -> str | None:
        value = event.get(name)
        if value is None:
            if required:
                self.problem(name, "is required: a non-empty string")
            return None
        kind = type(value)
        if kind is str:
            if not value:
                self.problem(name, "must be a non-empty string")
                return None
            if len(value) > self.max_len:
                self.problem(name, f"is {len(value)} characters long; at most {self.max_len}")
                return None
            if "\x00" in value:
                self.problem(name, "must not contain NUL characters")
                return None
            return str(value)
        if kind is int:
            return str(value)
        self.problem(name, f"must be a string, got {_json_type(value)}")
        return None

    def number(self, event: dict[str, Any], name: str) -> float | None:
        """An optional finite number."""
        value = event.get(name)
        if value is None:
            return None
        kind = type(value)
        if kind is float:
            if value - value != 0.0:  # NaN or +-inf
                self.problem(name, f"must be a finite number, got {value}")
                return None
            return float(value)
        if kind is int:
            try:
                return float(value)
            except OverflowError:
                self.problem(name, "is too large for a double-precision number")
                return None
        if kind is bool:
            self.problem(name, "must be a number, got a boolean (use 1 or 0)")
        else:
            self.problem(name, f"must be a number, got {_json_type(value)}")
        return None

    def timestamp(self, event: dict[str, Any]) -> str | None:
        value = event.get("timestamp")
        if value is None:
            self.stamped = True
            return self.now_text
        kind = type(value)
        try:
            if kind is str:
                ts = datetime.fromisoformat(value)
                # Common case: a plain ISO 8601 string that PostgreSQL reads as is; keep the text
                # (formatting the datetime again costs more than the parse).
                aware = ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
                if _PLAIN_ISO.fullmatch(value) and EARLIEST <= aware <= self.latest:
                    return str(value) if ts.tzinfo is not None else f"{value}Z"
                if ts.tzinfo is None:
                    ts = ts.replace(tzinfo=UTC)
            elif kind is int or kind is float:
                ts = datetime.fromtimestamp(value, UTC)
            else:
                self.problem(
                    "timestamp",
                    f"must be an ISO 8601 string or Unix seconds, got {_json_type(value)}",
                )
                return None
        except (ValueError, OverflowError, OSError):
            self.problem(
                "timestamp",
                f"{str(value)[:40]!r} is not a timestamp: use ISO 8601 such as "
                "'2026-11-22T10:00:00Z' or Unix seconds",
            )
            return None
        if ts < EARLIEST:
            self.problem("timestamp", f"{ts.isoformat()} is before 2000-01-01")
            return None
        if ts > self.latest:
            self.problem(
                "timestamp",
                f"{ts.isoformat()} is more than {self.tolerance_text} in the future "
                f"(server time {self.now_text}); check the client's clock and time zone",
            )
            return None
        return ts.isoformat()

    def features(self, event: dict[str, Any]) -> str | None:
        """The features as JSON text for COPY (serialised here, where the row is built, rather
        than by rebuilding every row in the repository)."""
        value = event.get("features")
        if value is None:
            return None
        if type(value) is not dict:
            self.problem(
                "features", f"must be an object (name -> number or string), got {_json_type(value)}"
            )
            return None
        if len(value) > self.max_features:
            self.problem(
                "features",
                f"has {len(value)} entries; at most {self.max_features} (ABSTATS_MAX_FEATURES)",
            )
            return None
        ok = True
        for name, item in value.items():
            if len(name) > self.max_len or "\x00" in name:
                self.problem(
                    f"features.{name[:40]}",
                    f"feature names are at most {self.max_len} characters, without NUL",
                )
                ok = False
                continue
            kind = type(item)
            if kind is str:
                if len(item) > self.max_len or "\x00" in item:
                    self.problem(
                        f"features.{name}",
                        f"string values are at most {self.max_len} characters, without NUL",
                    )
                    ok = False
            elif kind is float:
                if item - item != 0.0:
                    self.problem(f"features.{name}", f"must be a finite number, got {item}")
                    ok = False
            elif kind is int:
                if not -(2**63) <= item < 2**63:
                    self.problem(f"features.{name}", "integer out of the 64-bit range")
                    ok = False
            else:
                self.problem(
                    f"features.{name}",
                    f"must be a number or a string, got {_json_type(item)} (features are flat)",
                )
                ok = False
        return orjson.dumps(value).decode() if ok else None


def validate_events(
    events: Sequence[Any],
    *,
    resolve: RefResolver,
    settings: Settings,
    now: datetime | None = None,
) -> ValidatedBatch:
    """Validate ``events`` (parsed JSON) and turn the valid ones into rows with integer ids."""
    now = now or datetime.now(UTC)
    batch = ValidatedBatch()
    # Resolve every experiment key of the batch at once; re-read experiments whose cached entry
    # lacks a variant the batch names (it may have been added since).
    keys = {
        e["experiment"]
        for e in events
        if type(e) is dict
        and type(e.get("experiment")) is str
        and _EXPERIMENT_KEY_RE.match(e["experiment"])
    }
    refs = resolve(keys, None) if keys else {}
    stale = {
        e["experiment"]
        for e in events
        if type(e) is dict
        and type(e.get("variant")) is str
        and type(e.get("experiment")) is str
        and e["experiment"] in refs
        and e["variant"] not in refs[e["experiment"]][1]
    }
    if stale:
        refs.update(resolve(stale, stale))

    check = _EventChecker(settings, now)
    exposures = batch.exposures
    predictions = batch.predictions
    outcomes = batch.outcomes
    for index, event in enumerate(events):
        check.problems = []
        if type(event) is not dict:
            reason = (
                event.reason
                if isinstance(event, Unparseable)
                else f"each event must be a JSON object, got {_json_type(event)}"
            )
            batch.rejected.append(Rejection(index, None, f"events[{index}]", reason))
            batch.rejected_events += 1
            continue
        row = _check_event(event, check, refs)
        if check.problems:
            raw_id = event.get("message_id")
            message_id = raw_id if type(raw_id) is str else None
            for name, message in check.problems:
                batch.rejected.append(
                    Rejection(index, message_id, f"events[{index}].{name}", message)
                )
            batch.rejected_events += 1
            continue
        kind = event["type"]
        if kind == "prediction":
            predictions.append(row)  # type: ignore[arg-type]
        elif kind == "exposure":
            exposures.append(row)  # type: ignore[arg-type]
        else:
            outcomes.append(row)  # type: ignore[arg-type]
    if check.stamped:
        batch.stamped = check.now_text
    return batch


def _check_event(
    event: dict[str, Any], check: _EventChecker, refs: ExperimentRefs
) -> tuple[Any, ...] | None:
    kind = event.get("type")
    if type(kind) is not str or kind not in ALLOWED_FIELDS:
        if kind is None:
            check.problem("type", "is required: exposure, prediction or outcome")
        else:
            check.problem(
                "type", f"must be exposure, prediction or outcome, got {str(kind)[:40]!r}"
            )
        return None
    allowed = ALLOWED_FIELDS[kind]
    for name in event:
        if name not in allowed:
            hint = _FIELD_HINTS.get((kind, name))
            if hint is None:
                close = difflib.get_close_matches(name, sorted(allowed), n=1)
                hint = (
                    f"unknown field for a {kind}"
                    + (f"; did you mean '{close[0]}'?" if close else "")
                    + f" (allowed: {', '.join(sorted(allowed))})"
                )
            check.problem(name[:64], hint)

    message_id = check.ident(event, "message_id", required=True)
    unit_id = check.ident(event, "unit_id", required=True)
    ts = check.timestamp(event)

    experiment_id = 0
    variants: dict[str, int] = {}
    exp_key = event.get("experiment")
    if exp_key is None:
        check.problem("experiment", "is required: the experiment key")
    elif type(exp_key) is not str:
        check.problem(
            "experiment", f"must be a string (the experiment key), got {_json_type(exp_key)}"
        )
    else:
        ref = refs.get(exp_key)
        if ref is None and not _EXPERIMENT_KEY_RE.match(exp_key):
            check.problem(
                "experiment",
                f"{exp_key[:64]!r} is not an experiment key (lowercase letters, digits, '_' and "
                "'-', at most 64)",
            )
        elif ref is None:
            check.problem(
                "experiment",
                f"unknown experiment {exp_key[:64]!r}; create it with POST /v1/experiments",
            )
        else:
            experiment_id, variants = ref

    if kind == "outcome":
        request_id = check.ident(event, "request_id", required=False)
        outcome_name = event.get("name")
        if outcome_name is None:
            check.problem("name", "is required: the outcome name, e.g. 'converted'")
        elif type(outcome_name) is not str or not _NAME_RE.match(outcome_name):
            check.problem(
                "name",
                f"{str(outcome_name)[:64]!r} is not an outcome name: letters, digits, '_', '.', '-', "
                "at most 64 characters, starting with a letter or digit",
            )
        value = check.number(event, "value")
        if value is None and event.get("value") is None:
            check.problem("value", "is required: a number (e.g. 1 for converted, 0 for not)")
        if check.problems:
            return None
        return (experiment_id, unit_id, request_id, outcome_name, value, ts, message_id)

    variant_id = 0
    variant = event.get("variant")
    if variant is None:
        check.problem("variant", "is required: the variant key")
    elif type(variant) is not str:
        check.problem("variant", f"must be a string (the variant key), got {_json_type(variant)}")
    elif experiment_id:
        found = variants.get(variant)
        if found is None:
            check.problem(
                "variant",
                f"unknown variant {variant[:64]!r} of experiment {exp_key!r}; known: "
                f"{', '.join(sorted(variants))}",
            )
        else:
            variant_id = found

    if kind == "exposure":
        if check.problems:
            return None
        return (experiment_id, variant_id, unit_id, ts, message_id, "api")

    request_id = check.ident(event, "request_id", required=False)
    score = check.number(event, "score")
    label = check.number(event, "label")
    value = check.number(event, "value")
    latency = check.number(event, "latency_ms")
    if latency is not None and latency < 0:
        check.problem("latency_ms", f"must be >= 0, got {latency:g}")
    error = event.get("error")
    if error is None:
        error = False
    elif type(error) is not bool:
        check.problem("error", f"must be true or false, got {_json_type(error)}")
    features = check.features(event)
    if check.problems:
        return None
    return (
        experiment_id,
        variant_id,
        unit_id,
        request_id,
        ts,
        score,
        label,
        value,
        latency,
        error,
        features,
        message_id,
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _human_seconds(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
