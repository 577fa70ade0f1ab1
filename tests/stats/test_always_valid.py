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
