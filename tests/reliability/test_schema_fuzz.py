"""Schemathesis over every operation of the app's OpenAPI schema, with a valid admin key: no 5xx.

The app is called in-process (ASGI) on the test database with real commits. Each operation gets
positive cases (valid by the schema) and negative cases (violating it), derandomized so every run
sends the same requests. Operations with a ``{key}`` are also run against a real, running
experiment so that the cases reach the service code instead of stopping at 404.

``POST /v1/events`` reads its body itself, so the app's schema declares none; the envelope of
docs/events.md is added to the schema here so that its bodies are generated too.
"""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from sqlalchemy import Engine
from sqlalchemy.orm import Session

EXAMPLES = 24  # per operation, per mode, per path-parameter choice
KEY = "hostile"

_ID = {"type": "string", "minLength": 1, "maxLength": 80}
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "message_id", "experiment", "unit_id"],
    "properties": {
        "type": {"enum": ["exposure", "prediction", "outcome"]},
        "message_id": _ID,
        "experiment": {"anyOf": [{"enum": [KEY]}, _ID]},
        "variant": {"anyOf": [{"enum": ["v1", "v2"]}, _ID]},
        "unit_id": _ID,
        "request_id": _ID,
        "timestamp": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]},
        "score": {"type": "number"},
        "label": {"type": ["number", "null"]},
        "value": {"type": ["number", "null"]},
        "latency_ms": {"type": "number"},
        "error": {"type": "boolean"},
        "features": {
            "type": "object",
            "additionalProperties": {"anyOf": [{"type": "number"}, {"type": "string"}]},
        },
        "name": {"type": "string", "maxLength": 80},
    },
}
EVENTS_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["events"],
                "additionalProperties": False,
                "properties": {"events": {"type": "array", "maxItems": 8, "items": EVENT_SCHEMA}},
            }
        }
    },
}

EXPERIMENT = {
    "key": KEY,
    "name": "Hostile",
    "control": "v1",
    "variants": [{"key": "v1"}, {"key": "v2"}],
    "metrics": [
        {
            "key": "conversion",
            "kind": "proportion",
            "outcome": "converted",
            "role": "primary",
            "direction": "increase",
        }
    ],
}


def _schema_with_events_body(app: Any) -> Any:
    import schemathesis

    spec = copy.deepcopy(app.openapi())
    spec["paths"]["/v1/events"]["post"]["requestBody"] = EVENTS_BODY
    schema = schemathesis.openapi.from_dict(spec)
    schema.app = app
    return schema


def test_every_reference_in_the_served_schema_resolves(engine: Engine) -> None:
    """A dangling ``$ref`` breaks client generators and fuzzers (the create and patch bodies used
    to point at ``#/$defs/...``, which the document does not have)."""
    from abstats.api.app import create_app

    spec = create_app().openapi()
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    dangling = []
    for ref in set(refs):
        target: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        if target is None:
            dangling.append(ref)
    assert refs and not dangling, f"unresolvable $ref in /openapi.json: {sorted(dangling)}"


@pytest.mark.slow
def test_generated_requests_to_every_operation_get_no_5xx(committed_engine: Engine) -> None:
    import schemathesis

    from abstats import keys
    from abstats.api.app import create_app
    from abstats.control import service as control
    from abstats.experiments.schemas import parse_create
    from abstats.experiments.service import create_experiment, invalidate_refs

    invalidate_refs()
    with Session(committed_engine) as session:
        create_experiment(session, parse_create(EXPERIMENT))
        control.start(session, KEY, actor="test")
        admin = keys.create_key(session, scope="admin", name="fuzz admin")
        session.commit()
        admin_secret, admin_id = admin.secret, str(admin.id)
    headers = {"Authorization": f"Bearer {admin_secret}"}
    schema = _schema_with_events_body(create_app())

    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    server_errors: list[str] = []
    unsatisfiable: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]

    def run(label: str, strategy: st.SearchStrategy[Any]) -> None:
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def check(case: Any) -> None:
            # never revoke the key the fuzzer itself uses
            if str((case.path_parameters or {}).get("key_id")) == admin_id:
                return
            response = case.call(headers=headers)
            statuses[label][f"{response.status_code // 100}xx"] += 1
            if response.status_code >= 500:
                server_errors.append(
                    f"{case.operation.label} -> {response.status_code}: {response.text[:300]}\n"
                    f"  {case.as_curl_command(headers=headers)[:500]}"
                )

        try:
            check()
        except Unsatisfiable:  # nothing to violate (no parameters, no body): positive only
            unsatisfiable.append(label)

    for operation in operations:
        path_choices: list[dict[str, Any] | None] = [None]
        if "{key}" in operation.path:
            path_choices.append({"key": KEY})
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            for path_parameters in path_choices:
                strategy = operation.as_strategy(
                    generation_mode=mode, path_parameters=path_parameters
                )
                run(operation.label, strategy)

    total = Counter[str]()
    for counts in statuses.values():
        total.update(counts)
    print(f"\nschemathesis: {sum(total.values())} requests over {len(operations)} operations: ")
    print(f"  status classes {dict(total)}; no negative cases possible for {unsatisfiable}")
    for label, counts in statuses.items():
        print(f"  {label}: {dict(counts)}")
    invalidate_refs()
    assert len(statuses) == len(operations), "every operation was exercised"
    with_body = [op.label for op in operations if len(op.body)]
    starved = [label for label in with_body if sum(statuses[label].values()) < EXAMPLES]
    assert not starved, f"no bodies could be generated for {starved}"
    assert sum(total.values()) >= 1000
    assert not server_errors, "\n".join(server_errors[:10])
