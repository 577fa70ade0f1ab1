"""An unknown field at any depth of an experiment body gets a "did you mean" and the fields
allowed there (issue 15: only top-level fields had one)."""

from __future__ import annotations

import pytest

from abstats.errors import InvalidInput
from abstats.experiments.schemas import parse_create, parse_update

BODY = {
    "key": "churn",
    "name": "Churn",
    "control": "v1",
    "variants": [{"key": "v1", "wieght": 1}, {"key": "v2"}],
    "metrics": [
        {
            "key": "churn",
            "kind": "proportion",
            "outcom": "churned",
            "role": "primary",
            "direction": "decrease",
        }
    ],
    "policy": {"ramp": {"step": [5, 50]}, "promot": {}},
}


def test_nested_unknown_fields_suggest_the_right_field() -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_create(BODY)
    messages = {p.field: p.message for p in raised.value.errors}
    assert messages["variants[0].wieght"] == (
        "unknown field; did you mean 'weight'? allowed: key, metadata, model_version, weight"
    )
    assert messages["metrics[0].outcom"].startswith("unknown field; did you mean 'outcome'?")
    assert messages["policy.ramp.step"] == (
        "unknown field; did you mean 'steps'? allowed: min_interval, steps"
    )
    assert messages["policy.promot"].startswith("unknown field; did you mean 'promote'?")


def test_an_update_gets_them_too() -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_update({"variants": [{"key": "v1", "model_verison": "2"}, {"key": "v2"}]})
    (problem,) = raised.value.errors
    assert problem.field == "variants[0].model_verison"
    assert problem.message.startswith("unknown field; did you mean 'model_version'?")
