"""Validation and edge cases of the small helpers."""

from __future__ import annotations

import math

import pytest

from abstats.stats import (
    ClusteredHistogram,
    InferenceDesign,
    MeanStats,
    ProportionStats,
    SequentialState,
    compare,
    newcombe_interval,
    two_proportion_z_test,
    welch_t_test,
    wilson_interval,
)
from abstats.stats._group_sequential import _Recursion, _solve_boundary


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "bayesian"}, "unknown inference method"),
        ({"alpha": 0.0}, "alpha"),
        ({"mde_relative": -0.1}, "mde_relative"),
        ({"mde_absolute": 0.0}, "mde_absolute"),
        ({"mde_absolute": math.inf}, "mde_absolute"),
        ({"max_units_per_variant": 1}, "max_units_per_variant"),
        ({"method": "group_sequential"}, "needs max_units_per_variant"),
        ({"mde_relative": None}, "needs mde_relative"),
        ({"spending": "linear"}, "spending"),
        ({"min_units_per_variant": -1}, "min_units_per_variant"),
        ({"min_information_increment": 1.0}, "min_information_increment"),
    ],
)
def test_inference_design_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InferenceDesign(**kwargs)  # type: ignore[arg-type]


def test_sequential_state_round_trip_and_validation() -> None:
    state = SequentialState(0.2, 0.01, (0.1, 0.3))
    assert SequentialState.from_dict(state.to_dict()) == state
    assert SequentialState.from_dict({"p_value": None}) == SequentialState()
    with pytest.raises(ValueError, match="list"):
        SequentialState.from_dict({"information_fractions": "0.1"})


def test_reference_tests_on_empty_or_constant_input() -> None:
    assert all(
        math.isnan(v) for v in two_proportion_z_test(ProportionStats(), ProportionStats(5, 1))
    )
    zeros = two_proportion_z_test(ProportionStats(10, 0), ProportionStats(10, 0))
    assert math.isnan(zeros.p_value) and zeros.ci_lower == zeros.ci_upper == 0.0
    assert all(math.isnan(v) for v in welch_t_test(MeanStats.from_values([1.0]), MeanStats.from_values([1.0, 2.0])))  # fmt: skip
    constant = MeanStats.from_values([3.0, 3.0, 3.0])
    assert all(math.isnan(v) for v in welch_t_test(constant, constant))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert newcombe_interval((0.0, 0.0), (1.0, 2.0)) == (-1.0, 1.0)
    assert newcombe_interval((10.0, 100.0), (20.0, 100.0)) == newcombe_interval(
        ProportionStats(100, 10), ProportionStats(100, 20)
    )


def test_zero_variance_cannot_show_non_inferiority() -> None:
    constant = MeanStats.from_values([5.0] * 50)
    result = compare(
        constant, constant, design=InferenceDesign("fixed"), alternative="greater",
        relative=False, margin=0.5, margin_relative=False,
    )  # fmt: skip
    assert result.status == "degenerate"
    assert result.non_inferior is None
    assert "non-inferiority cannot be shown" in result.message


def test_histogram_from_no_values() -> None:
    edges = [0.0, 1.0, math.inf]
    assert ClusteredHistogram.from_unit_index([], [], edges) == ClusteredHistogram.empty(edges)


def test_an_impossible_spending_target_rejects_everything_that_continued() -> None:
    # more error than all paths still running: the boundary drops to 0 (|Z| >= 0 always)
    assert _solve_boundary(_Recursion(0.0, 8), 1.0, 2.0, True) == 0.0


def test_newcombe_p_value_beyond_z_40() -> None:
    result = compare(
        ProportionStats(10**6, 0), ProportionStats(10**6, 10**6), design=InferenceDesign("fixed"),
        relative=False,
    )  # fmt: skip
    assert result.p_value <= 1e-300  # the normal tail beyond z = 40 underflows
    assert result.significant
