"""Normal-mixture SPRT: p-values, confidence sequences, tuning and horizon calibration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from abstats.stats import (
    always_valid_p_value,
    confidence_sequence,
    crossing_probability,
    horizon_log_threshold,
    horizon_p_value,
    horizon_test,
    mixing_grid,
    mixture_boundary,
    optimal_mixing_ratio,
    tuned_mixing_variance,
)


def test_optimal_ratio_solves_its_first_order_condition() -> None:
    for alpha in (0.01, 0.05, 0.1):
        r = optimal_mixing_ratio(alpha)
        assert r == pytest.approx(2 * math.log(1 / alpha) + math.log1p(r), rel=1e-12)

        # and it minimises the confidence-sequence width at V = 1
        def width(ratio: float, alpha: float = alpha) -> float:
            low, high = confidence_sequence(0.0, 1.0, mixing_variance=ratio, alpha=alpha)
            return high - low

        assert width(r) < width(0.9 * r)
        assert width(r) < width(1.1 * r)
    with pytest.raises(ValueError):
        optimal_mixing_ratio(1.5)


def test_tuned_mixing_variance() -> None:
    r = optimal_mixing_ratio(0.05)
    assert tuned_mixing_variance(alpha=0.05, variance_at_horizon=2e-5) == pytest.approx(r * 2e-5)
    # narrowest where the MDE sits exactly on the confidence sequence's edge
    tau2 = tuned_mixing_variance(alpha=0.05, mde=0.02)
    v_star = 0.02**2 / (1 + r)
    _low, high = confidence_sequence(0.0, v_star, mixing_variance=tau2, alpha=0.05)
    assert high == pytest.approx(0.02, rel=1e-12)
    assert math.isnan(tuned_mixing_variance(alpha=0.05))
    assert math.isnan(tuned_mixing_variance(alpha=0.05, mde=0.0))


def test_p_value_matches_mixture_likelihood_ratio() -> None:
    # Johari et al. (2017), eq. (7), written out
    estimate, variance, tau2 = 0.013, 2.5e-5, 1e-4
    ratio = math.sqrt(variance / (variance + tau2)) * math.exp(
        estimate**2 * tau2 / (2 * variance * (variance + tau2))
    )
    p = always_valid_p_value(estimate, variance, mixing_variance=tau2)
    assert p == pytest.approx(1 / ratio, rel=1e-12)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_confidence_sequence_and_p_value_agree(alternative: str) -> None:
    estimate, variance, tau2, alpha = 0.4, 0.01, 0.08, 0.05
    low, high = confidence_sequence(
        estimate, variance, mixing_variance=tau2, alpha=alpha, alternative=alternative
    )
    assert low <= estimate <= high
    edge = low if alternative != "less" else high
    # the null on the sequence's edge has p = alpha
    p = always_valid_p_value(
        estimate, variance, mixing_variance=tau2, null_value=edge, alternative=alternative
    )
    assert p == pytest.approx(alpha, rel=1e-9)
    if alternative == "greater":
        assert math.isinf(high)
    if alternative == "less":
        assert math.isinf(low)


def test_one_sided_p_values_point_the_right_way() -> None:
    kwargs = {"variance": 1e-4, "mixing_variance": 1e-3}
    assert always_valid_p_value(0.05, alternative="greater", **kwargs) < 0.01
    assert always_valid_p_value(0.05, alternative="less", **kwargs) == 1.0
    assert always_valid_p_value(-0.05, alternative="less", **kwargs) < 0.01
    two = always_valid_p_value(0.05, **kwargs)
    one = always_valid_p_value(0.05, alternative="greater", **kwargs)
    assert one < two  # the half-normal mixture puts all its mass on the right side


def test_previous_p_value_makes_the_sequence_non_increasing() -> None:
    first = always_valid_p_value(0.05, 1e-4, mixing_variance=1e-3)
    later = always_valid_p_value(0.0, 1e-5, mixing_variance=1e-3, previous_p_value=first)
    assert later == first
    assert always_valid_p_value(0.0, 1e-5, mixing_variance=1e-3, previous_p_value=1.0) == 1.0


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        always_valid_p_value(0.1, 0.0, mixing_variance=1.0)
    with pytest.raises(ValueError):
        always_valid_p_value(0.1, 1.0, mixing_variance=math.nan)
    with pytest.raises(ValueError):
        confidence_sequence(0.1, 1.0, mixing_variance=1.0, alpha=0.0)


def test_mixture_boundary_is_the_p_value_threshold() -> None:
    r = optimal_mixing_ratio(0.05)
    for s in (0.1, 0.5, 1.0):
        b = mixture_boundary(s, ratio=r, log_threshold=math.log(20))
        # with tau^2 = r V_N and V = V_N / s, z = b is exactly on Ville's threshold
        p = always_valid_p_value(b, 1.0, mixing_variance=r * s)
        assert p == pytest.approx(0.05, rel=1e-9)


@pytest.mark.parametrize("two_sided", [True, False])
def test_horizon_calibration_has_error_alpha_under_dense_monitoring(two_sided: bool) -> None:
    """An independent check on another look schedule: 100 equally spaced looks stay under alpha,
    and with Siegmund's continuity correction (continuous monitoring) they reach it."""
    alpha = 0.05
    r = optimal_mixing_ratio(alpha if two_sided else 2 * alpha)
    log_kappa = horizon_log_threshold(alpha, ratio=r, two_sided=two_sided)
    assert log_kappa < math.log(1 / alpha)  # Ville's threshold is conservative at a horizon
    looks = [(k + 1) / 100 for k in range(100)]
    bounds = [mixture_boundary(s, ratio=r, log_threshold=log_kappa) for s in looks]
    assert crossing_probability(bounds, looks, two_sided=two_sided) <= alpha
    corrected = [b - 0.5826 * math.sqrt(1 / 100 / s) for b, s in zip(bounds, looks, strict=True)]
    assert crossing_probability(corrected, looks, two_sided=two_sided) == pytest.approx(
        alpha, abs=1e-3
    )


def test_horizon_p_value_is_monotone_and_bounded_by_ville() -> None:
    r = optimal_mixing_ratio(0.05)
    log_lrs = np.linspace(-1, 25, 60)
    p = [horizon_p_value(v, ratio=r, two_sided=True) for v in log_lrs]
    assert all(a >= b for a, b in itertools.pairwise(p))
    assert all(q <= min(1.0, math.exp(-v)) + 1e-15 for q, v in zip(p, log_lrs, strict=True))
    assert p[0] == 1.0
    # threshold and p-value are inverse to each other, inside and beyond the table
    for alpha in (0.2, 0.05, 1e-3, 1e-9):
        log_kappa = horizon_log_threshold(alpha, ratio=r, two_sided=True)
        assert horizon_p_value(log_kappa, ratio=r, two_sided=True) == pytest.approx(alpha, rel=1e-6)
    assert horizon_log_threshold(0.9999, ratio=r, two_sided=True) == 0.0


def test_horizon_test_decides_like_its_boundary() -> None:
    r = optimal_mixing_ratio(0.05)
    p, boundary = horizon_test(3.0, 0.5, ratio=r, alpha=0.05, alternative="two-sided")
    assert (p <= 0.05) == (boundary <= 3.0)
    p_above, _ = horizon_test(boundary + 1e-6, 0.5, ratio=r, alpha=0.05, alternative="two-sided")
    p_below, _ = horizon_test(boundary - 1e-6, 0.5, ratio=r, alpha=0.05, alternative="two-sided")
    assert p_above <= 0.05 < p_below
    # one-sided: the wrong direction never rejects
    r1 = optimal_mixing_ratio(0.1)
    assert horizon_test(-5.0, 1.0, ratio=r1, alpha=0.05, alternative="greater")[0] == 1.0
    assert horizon_test(-5.0, 1.0, ratio=r1, alpha=0.05, alternative="less")[0] < 1e-3
    # past the horizon the boundary stays at its value at s = 1
    assert (
        horizon_test(2.0, 3.0, ratio=r, alpha=0.05, alternative="two-sided")[1]
        == (horizon_test(2.0, 1.0, ratio=r, alpha=0.05, alternative="two-sided")[1])
    )
    assert horizon_test(0.0, 0.5, ratio=r, alpha=0.05, alternative="two-sided", previous_p_value=0.01)[0] == 0.01  # fmt: skip


# ------------------------------------------------------------------ grid mixture


def test_single_component_reference_values_are_unchanged() -> None:
    """Values of the single normal mixture from before the grid mixture existed; a one-element
    grid is the same test."""
    kwargs = {"variance": 2.5e-5, "mixing_variance": 1e-4}
    assert always_valid_p_value(0.013, **kwargs) == pytest.approx(0.14967619117642966, rel=1e-12)
    assert always_valid_p_value(0.013, alternative="greater", **kwargs) == pytest.approx(
        0.07559574138084525, rel=1e-12
    )
    assert always_valid_p_value(-0.013, alternative="less", **kwargs) == pytest.approx(
        0.07559574138084525, rel=1e-12
    )
    assert always_valid_p_value(
        0.004, null_value=-0.01, alternative="greater", **kwargs
    ) == pytest.approx(0.0488854091036059, rel=1e-12)
    low, high = confidence_sequence(0.013, 2.5e-5, mixing_variance=1e-4, alpha=0.05)
    assert (low, high) == pytest.approx((-0.002411949969445465, 0.028411949969445464), rel=1e-12)
    low, _ = confidence_sequence(
        0.013, 2.5e-5, mixing_variance=1e-4, alpha=0.05, alternative="greater"
    )
    assert low == pytest.approx(-0.0009499416240300283, rel=1e-9)
    _, high = confidence_sequence(
        -0.013, 2.5e-5, mixing_variance=1e-4, alpha=0.1, alternative="less"
    )
    assert high == pytest.approx(-0.0006812458688939451, rel=1e-9)
    for alternative in ("two-sided", "greater", "less"):
        assert always_valid_p_value(
            0.011, 2.5e-5, mixing_variance=[1e-4], alternative=alternative
        ) == always_valid_p_value(0.011, 2.5e-5, mixing_variance=1e-4, alternative=alternative)
        assert confidence_sequence(
            0.011,
            2.5e-5,
            mixing_variance=mixing_grid(1e-4, size=1),
            alpha=0.05,
            alternative=alternative,
        ) == confidence_sequence(
            0.011, 2.5e-5, mixing_variance=1e-4, alpha=0.05, alternative=alternative
        )


def test_grid_p_value_is_the_weighted_mixture_of_likelihood_ratios() -> None:
    estimate, variance = 0.013, 2.5e-5
    grid = mixing_grid(1e-4)
    assert grid == pytest.approx((1e-4, 4e-4, 16e-4, 64e-4), rel=1e-15)

    def ratio(tau2: float) -> float:
        return math.sqrt(variance / (variance + tau2)) * math.exp(
            estimate**2 * tau2 / (2 * variance * (variance + tau2))
        )

    p = always_valid_p_value(estimate, variance, mixing_variance=grid)
    assert p == pytest.approx(1 / (sum(ratio(t) for t in grid) / 4), rel=1e-12)
    weights = (0.4, 0.3, 0.2, 0.1)
    weighted = always_valid_p_value(
        estimate, variance, mixing_variance=grid, mixing_weights=[10 * w for w in weights]
    )  # weights are normalised
    assert weighted == pytest.approx(
        1 / sum(w * ratio(t) for w, t in zip(weights, grid, strict=True)), rel=1e-12
    )


def test_grid_detects_large_effects_earlier_and_costs_little_at_the_tuned_one() -> None:
    tau2 = tuned_mixing_variance(alpha=0.05, mde=0.02)
    r = optimal_mixing_ratio(0.05)
    v_star = 0.02**2 / (1 + r)  # where the single mixture just detects the MDE
    _, single = confidence_sequence(0.0, v_star, mixing_variance=tau2, alpha=0.05)
    _, grid = confidence_sequence(0.0, v_star, mixing_variance=mixing_grid(tau2), alpha=0.05)
    assert single < grid < 1.1 * single  # the price at the tuned effect: under 10% wider
    # an effect five times the MDE: the variance at which each test just detects it
    for v in np.geomspace(v_star, 100 * v_star, 200):
        if always_valid_p_value(0.1, v, mixing_variance=tau2) > 0.05:
            single_v = v
            break
    for v in np.geomspace(v_star, 100 * v_star, 200):
        if always_valid_p_value(0.1, v, mixing_variance=mixing_grid(tau2)) > 0.05:
            grid_v = v
            break
    assert grid_v > 1.5 * single_v  # detected with at least 1.5x less information


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_grid_confidence_sequence_is_dual_to_the_p_value(alternative: str) -> None:
    """At every look of a random walk, the null is outside the sequence iff p <= alpha."""
    rng = np.random.default_rng(13)
    alpha, tau2 = 0.05, 2e-4
    grid = mixing_grid(tau2)
    decided = undecided = 0
    drift = -0.03 if alternative == "less" else 0.03
    for run in range(20):
        total = 0.0
        for n in range(1, 101):
            total += rng.normal(drift * (run % 2), 0.1)  # every second walk has no effect
            estimate, variance = total / n, 0.01 / n
            low, high = confidence_sequence(
                estimate, variance, mixing_variance=grid, alpha=alpha, alternative=alternative
            )
            assert low <= estimate <= high
            p = always_valid_p_value(
                estimate, variance, mixing_variance=grid, alternative=alternative
            )
            if abs(p - alpha) < 1e-9:
                continue
            covered = low < 0.0 < high
            assert covered == (p > alpha)
            decided += not covered
            undecided += covered
        # the edges are the nulls with p = alpha
        for edge in (low, high):
            if math.isfinite(edge):
                p_edge = always_valid_p_value(
                    estimate,
                    variance,
                    mixing_variance=grid,
                    null_value=edge,
                    alternative=alternative,
                )
                assert p_edge == pytest.approx(alpha, rel=1e-8)
    assert decided > 0 and undecided > 0  # both sides of the duality were exercised


@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_grid_mixture_is_valid_under_repeated_looks(alternative: str) -> None:
    """Type-I error under 200 looks of a null random walk stays under alpha (Ville), while
    a naive z-test at the same looks exceeds it: the simulation can tell the two apart."""
    rng = np.random.default_rng(20261202)
    alpha, runs, looks = 0.1, 2000, 200
    grid = mixing_grid(tuned_mixing_variance(alpha=alpha, mde=0.1))  # sd 1 per observation
    paths = np.cumsum(rng.normal(0.0, 1.0, size=(runs, looks)), axis=1)
    n = np.arange(1, looks + 1)
    rejected = naive = 0
    z_crit = 1.6448536269514722 if alternative == "two-sided" else 1.2815515655446004
    for path in paths:
        estimates = path / n
        z = path / np.sqrt(n)
        naive += bool(np.any((np.abs(z) if alternative == "two-sided" else z) > z_crit))
        p = 1.0
        for k in range(0, looks, 2):  # every second look: 100 looks
            p = always_valid_p_value(
                float(estimates[k]),
                1.0 / float(n[k]),
                mixing_variance=grid,
                alternative=alternative,
                previous_p_value=p,
            )
            if p <= alpha:
                rejected += 1
                break
    rate = rejected / runs
    se = math.sqrt(alpha * (1 - alpha) / runs)
    assert rate <= alpha + 2 * se
    assert naive / runs > alpha + 5 * se
    assert rejected > 0


def test_grid_inputs_are_checked() -> None:
    with pytest.raises(ValueError):
        mixing_grid(1e-3, factor=1.0)
    with pytest.raises(ValueError):
        mixing_grid(1e-3, size=0)
    with pytest.raises(ValueError):
        always_valid_p_value(0.1, 1.0, mixing_variance=[])
    with pytest.raises(ValueError):
        always_valid_p_value(0.1, 1.0, mixing_variance=[1.0, -1.0])
    with pytest.raises(ValueError):
        always_valid_p_value(0.1, 1.0, mixing_variance=[1.0, 2.0], mixing_weights=[1.0])
    with pytest.raises(ValueError):
        confidence_sequence(
            0.1, 1.0, mixing_variance=[1.0, 2.0], mixing_weights=[0.0, 0.0], alpha=0.05
        )
