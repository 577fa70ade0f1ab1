"""Group-sequential boundaries against published tables."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from abstats.stats import (
    alpha_spent,
    classical_boundaries,
    crossing_probability,
    spending_boundaries,
    stopping_probabilities,
)


def equally_spaced(k: int) -> list[float]:
    return [(i + 1) / k for i in range(k)]


# Armitage, McPherson and Rowe (1969), Table 2 (reproduced in Jennison and Turnbull 2000,
# Table 1.1): type I error of repeated two-sided 5 % tests on accumulating normal data.
AMR_1969 = {1: 0.050, 2: 0.083, 3: 0.107, 4: 0.126, 5: 0.142, 10: 0.193, 20: 0.248, 50: 0.320,
            100: 0.374, 1000: 0.530}  # fmt: skip


@pytest.mark.parametrize(("looks", "published"), sorted(AMR_1969.items()))
def test_naive_repeated_testing_matches_armitage_mcpherson_rowe(
    looks: int, published: float
) -> None:
    z = float(stats.norm.isf(0.025))
    assert round(crossing_probability([z] * looks, equally_spaced(looks)), 3) == published


# Jennison and Turnbull (2000), Table 2.1 (Pocock C_P) and Table 2.3 (O'Brien-Fleming C_B),
# two-sided alpha = 0.01, 0.05, 0.10, K equally spaced looks.
POCOCK = {
    0.01: {1: 2.576, 2: 2.772, 3: 2.873, 4: 2.939, 5: 2.986, 10: 3.117},
    0.05: {1: 1.960, 2: 2.178, 3: 2.289, 4: 2.361, 5: 2.413, 6: 2.453, 7: 2.485, 8: 2.512,
           9: 2.535, 10: 2.555, 15: 2.626, 20: 2.672},
    0.10: {1: 1.645, 2: 1.875, 3: 1.992, 4: 2.067, 5: 2.122, 10: 2.270},
}  # fmt: skip
OBRIEN_FLEMING = {
    0.01: {1: 2.576, 2: 2.580, 3: 2.595, 4: 2.609, 5: 2.621, 10: 2.660},
    0.05: {1: 1.960, 2: 1.977, 3: 2.004, 4: 2.024, 5: 2.040, 6: 2.053, 7: 2.063, 8: 2.072,
           9: 2.080, 10: 2.087, 15: 2.110},
    0.10: {1: 1.645, 2: 1.678, 3: 1.710, 4: 1.733, 5: 1.751, 10: 1.801},
}  # fmt: skip


@pytest.mark.parametrize(
    ("alpha", "looks", "published"),
    [(a, k, c) for a, table in POCOCK.items() for k, c in table.items()],
)
def test_pocock_constants(alpha: float, looks: int, published: float) -> None:
    bounds = classical_boundaries(looks, alpha, "pocock")
    assert round(bounds[0], 3) == published
    assert all(b == pytest.approx(bounds[0]) for b in bounds)


@pytest.mark.parametrize(
    ("alpha", "looks", "published"),
    [(a, k, c) for a, table in OBRIEN_FLEMING.items() for k, c in table.items()],
)
def test_obrien_fleming_constants(alpha: float, looks: int, published: float) -> None:
    bounds = classical_boundaries(looks, alpha, "obrien_fleming")
    assert round(bounds[-1], 3) == published
    assert bounds[0] == pytest.approx(published * math.sqrt(looks), abs=2e-3)


# Lan-DeMets spending, 5 equally spaced looks, two-sided 0.05 (alpha/2 per side): the values of
# DeMets and Lan (1994), Stat. Med. 13, Table I, and of R's ldbounds / gsDesign.
LAN_DEMETS = {
    "obrien_fleming": (4.877, 3.357, 2.680, 2.290, 2.031),
    "pocock": (2.438, 2.427, 2.410, 2.397, 2.386),
}


@pytest.mark.parametrize("kind", ["obrien_fleming", "pocock"])
def test_lan_demets_boundaries(kind: str) -> None:
    bounds = spending_boundaries(equally_spaced(5), 0.05, kind)  # type: ignore[arg-type]
    assert tuple(round(b, 3) for b in bounds) == LAN_DEMETS[kind]
    one_sided = spending_boundaries(equally_spaced(5), 0.025, kind, two_sided=False)  # type: ignore[arg-type]
    # not identical: two-sided paths that cross below stop and cannot cross above later
    assert one_sided == pytest.approx(bounds, abs=1e-4)


@pytest.mark.parametrize("kind", ["obrien_fleming", "pocock"])
@pytest.mark.parametrize(
    "fractions",
    [[0.1, 0.25, 0.3, 0.7, 1.0], [0.05 * (k + 1) for k in range(20)], [0.5, 1.0], [1.0]],
)
@pytest.mark.parametrize("two_sided", [True, False])
def test_boundaries_spend_exactly_alpha(kind: str, fractions: list[float], two_sided: bool) -> None:
    bounds = spending_boundaries(fractions, 0.05, kind, two_sided)  # type: ignore[arg-type]
    assert crossing_probability(bounds, fractions, two_sided=two_sided) == pytest.approx(
        0.05, abs=1e-7
    )
    # each look spends what the spending function allows, given the past
    spent = np.cumsum(stopping_probabilities(bounds, fractions, two_sided=two_sided))
    side = 0.025 if two_sided else 0.05
    expected = [(2 if two_sided else 1) * alpha_spent(kind, t, side) for t in fractions]  # type: ignore[arg-type]
    assert spent == pytest.approx(expected, abs=1e-7)


def test_spending_functions() -> None:
    assert alpha_spent("obrien_fleming", 1.0, 0.05) == pytest.approx(0.05)
    assert alpha_spent("pocock", 1.0, 0.05) == pytest.approx(0.05)
    assert alpha_spent("pocock", 2.0, 0.05) == pytest.approx(0.05)  # overrunning
    assert alpha_spent("obrien_fleming", 0.0, 0.05) == 0.0
    assert alpha_spent("obrien_fleming", 0.5, 0.05) < alpha_spent("pocock", 0.5, 0.05)
    with pytest.raises(ValueError, match="unknown spending"):
        alpha_spent("linear", 0.5, 0.05)  # type: ignore[arg-type]


def test_many_small_looks_stay_accurate() -> None:
    """500 looks: information increments far below the integration grid's native spacing."""
    fractions = equally_spaced(500)
    bounds = spending_boundaries(fractions, 0.05)
    assert all(a >= b for a, b in itertools.pairwise(bounds) if math.isfinite(a))
    assert math.isinf(bounds[0])  # O'Brien-Fleming spends nothing at t = 0.002
    assert crossing_probability(bounds, fractions) == pytest.approx(0.05, abs=1e-6)
    # continuous monitoring needs a higher final boundary than 100 looks
    assert bounds[-1] > spending_boundaries(equally_spaced(100), 0.05)[-1]


def test_power_with_drift_matches_fixed_design() -> None:
    drift = stats.norm.isf(0.025) + stats.norm.isf(0.2)  # 80 % power at the horizon
    z = float(stats.norm.isf(0.025))
    power = crossing_probability([z], [1.0], drift=drift)
    assert power == pytest.approx(0.8 + stats.norm.cdf(-z - drift), abs=1e-12)
    bounds = spending_boundaries(equally_spaced(5), 0.05)
    sequential = crossing_probability(bounds, equally_spaced(5), drift=drift)
    assert 0.77 < sequential < 0.8  # O'Brien-Fleming costs little power


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        spending_boundaries([0.5, 0.5], 0.05)
    with pytest.raises(ValueError, match="at least one"):
        crossing_probability([], [])
    with pytest.raises(ValueError, match="one boundary per"):
        crossing_probability([2.0], [0.5, 1.0])
    with pytest.raises(ValueError, match="alpha"):
        spending_boundaries([1.0], 1.5)
    with pytest.raises(ValueError, match="looks"):
        classical_boundaries(0, 0.05)


def test_cannot_spend_more_than_continuation_allows() -> None:
    # a huge alpha at a late look after boundaries of 0: everything already stopped
    assert crossing_probability([0.0, 0.0], [0.5, 1.0]) == pytest.approx(1.0)
    bounds = spending_boundaries([0.5, 1.0], 0.999, "pocock")
    assert bounds[1] >= 0.0
