"""Fast, seeded versions of tests/perf/simulate_sequential.py (the full run is `make bench`).

Rates are checked against their targets within two Monte-Carlo standard errors. The decisions
are the vectorised mirrors of ``compare`` from the simulation script; ``test_mirror_matches_compare``
replays simulated experiments through ``compare`` itself.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from abstats.stats import InferenceDesign, sequential_power


def _load_script() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "perf" / "simulate_sequential.py"
    spec = importlib.util.spec_from_file_location("simulate_sequential", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["simulate_sequential"] = module
    spec.loader.exec_module(module)
    return module


sim = _load_script()


def upper(rate: float, sims: int) -> float:
    """Target plus two Monte-Carlo standard errors."""
    return rate + 2 * math.sqrt(rate * (1 - rate) / sims)


def se(p: float, sims: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-4) / sims)


SIMS = 1500


@pytest.fixture(scope="module")
def null_20() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(101)
    return {k: v.astype(float) for k, v in sim.run_fixed_grid(rng, SIMS, 20, 0.1, True).items()}


@pytest.fixture(scope="module")
def lift_20() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(102)
    return {k: v.astype(float) for k, v in sim.run_fixed_grid(rng, SIMS, 20, 0.11, True).items()}


def test_naive_repeated_z_reproduces_armitage(null_20: dict[str, np.ndarray]) -> None:
    """The harness check: 20 naive looks give about 0.25 (Armitage et al. 1969: 0.248)."""
    rate = null_20["naive z"].mean()
    assert abs(rate - 0.248) < 3 * se(0.248, SIMS)


@pytest.mark.parametrize(
    "method", ["always_valid", "group_sequential", "fixed", "always_valid, no horizon"]
)
def test_aa_false_positive_rate(null_20: dict[str, np.ndarray], method: str) -> None:
    assert null_20[method].mean() <= upper(0.05, SIMS)


def test_power_against_fixed_horizon(lift_20: dict[str, np.ndarray]) -> None:
    fixed = lift_20["fixed"].mean()
    always = lift_20["always_valid"].mean()
    group = lift_20["group_sequential"].mean()
    slack = 2 * se(0.8, SIMS)
    assert always >= 0.75 * fixed - slack
    assert group >= 0.95 * fixed - slack
    # and the simulated power agrees with the numerical integration
    for method, simulated in (("always_valid", always), ("group_sequential", group)):
        design = InferenceDesign(method, max_units_per_variant=sim.N_MAX)  # type: ignore[arg-type]
        theory = sequential_power(design, baseline=0.1, mde=0.1, looks=20)
        assert abs(simulated - theory) < 4 * se(theory, SIMS)


@pytest.mark.parametrize(
    ("relative", "n_c", "n_t"),
    [(False, 20_000, 20_000), (True, 32_000, 8_000), (False, 32_000, 8_000)],
    ids=["absolute", "relative-20/80", "absolute-20/80"],
)
def test_aa_other_paths(relative: bool, n_c: int, n_t: int) -> None:
    rng = np.random.default_rng(103)
    rates = sim.run_fixed_grid(rng, 1000, 50, 0.1, relative, n_c, n_t)
    for method in ("always_valid", "group_sequential", "fixed"):
        assert rates[method].mean() <= upper(0.05, 1000), method


def test_aa_under_a_ramp_with_a_drifting_baseline() -> None:
    rng = np.random.default_rng(104)
    rates = sim.run_ramp(rng, 600, 60, 40_000)
    assert rates["stratified always_valid"].mean() <= upper(0.05, 600)
    assert rates["stratified group_sequential"].mean() <= upper(0.05, 600)
    # what stratification prevents: pooled across epochs, the trend looks like an effect
    assert rates["pooled (unstratified) always_valid"].mean() > 0.08


def test_srm_false_alarms_over_1000_checks() -> None:
    rng = np.random.default_rng(105)
    null = sim.run_srm(rng, 1500, 1000, 200, 0.5)
    assert null["sequential (Dirichlet-multinomial, p <= 0.01)"].mean() <= upper(0.01, 1500)
    # why not the plain chi-square at p < 0.001: repeated 1,000 times it alarms too often
    assert null["chi-square, p < 0.001 at every check"].mean() > 0.01
    alternative = sim.run_srm(rng, 300, 1000, 200, 0.49)
    assert alternative["sequential (Dirichlet-multinomial, p <= 0.01)"].mean() > 0.99


def test_mirror_matches_compare() -> None:
    # 2 experiments x (3 superiority designs + 2 non-inferiority designs)
    agree, total = sim.mirror_check(np.random.default_rng(106), 2, 20)
    assert agree == total == 10
    assert sim.ramp_mirror_check()
