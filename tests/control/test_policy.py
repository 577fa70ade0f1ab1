"""Pure policy helpers: largest-remainder percentages and ramp positions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from abstats.engine.ramp import (
    largest_remainder_percentages,
    nearest_step_index,
    ramp_steps,
    weights_for_step,
)
from abstats.engine.specs import RampRule


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({"a": 1, "b": 1, "c": 1}, {"a": 34, "b": 33, "c": 33}),
        ({"a": 95, "b": 5}, {"a": 95, "b": 5}),
        ({"a": 2, "b": 1}, {"a": 67, "b": 33}),
        ({"a": 0, "b": 3}, {"a": 0, "b": 100}),
        ({"a": 12.5, "b": 12.5, "c": 75}, {"a": 13, "b": 12, "c": 75}),
    ],
)
def test_largest_remainder_examples(weights: dict[str, float], expected: dict[str, int]) -> None:
    assert largest_remainder_percentages(weights) == expected


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=8))
def test_largest_remainder_sums_to_100_and_is_within_one_point(raw: list[float]) -> None:
    if sum(raw) <= 0:
        return
    weights = {f"v{i}": w for i, w in enumerate(raw)}
    result = largest_remainder_percentages(weights)
    assert sum(result.values()) == 100
    total = sum(raw)
    for k, w in weights.items():
        assert abs(result[k] - 100 * w / total) < 1.0
        if w == 0:
            assert result[k] == 0


def test_largest_remainder_rejects_all_zero() -> None:
    with pytest.raises(ValueError, match="not all 0"):
        largest_remainder_percentages({"a": 0, "b": 0})


def test_ramp_steps_and_nearest_step() -> None:
    rule = RampRule(steps=[5, 25, 50, 100])
    assert ramp_steps(rule) == [5, 25, 50]
    assert nearest_step_index(rule, 5.0) == 0
    assert nearest_step_index(rule, 30.0) == 1
    assert nearest_step_index(rule, 40.0) == 2
    assert nearest_step_index(rule, 100.0) == 2
    assert nearest_step_index(RampRule(steps=[100]), 50.0) is None


def test_weights_for_step_splits_equally() -> None:
    assert weights_for_step(10, "c", ["a", "b"]) == {"c": 90, "a": 5, "b": 5}
