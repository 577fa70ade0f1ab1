"""Sufficient statistics: construction, addition, moments, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from abstats.stats import (
    BinnedScores,
    ClusteredHistogram,
    ConfusionStats,
    MeanStats,
    ProportionStats,
    RatioStats,
    auc_delong,
    log_spaced_bin_edges,
)


def test_mean_stats_moments_match_numpy() -> None:
    values = np.random.default_rng(0).normal(3, 2, 500)
    s = MeanStats.from_values(values)
    assert s.mean == pytest.approx(values.mean())
    assert s.variance == pytest.approx(values.var(ddof=1))
    assert math.isnan(MeanStats().mean) and math.isnan(MeanStats(1, 2.0, 4.0).variance)
    assert MeanStats.empty() + s == s


def test_proportion_stats() -> None:
    p = ProportionStats(10, 3) + ProportionStats(5, 2)
    assert p == ProportionStats(15, 5)
    assert p.proportion == pytest.approx(1 / 3) == p.mean
    assert p.to_mean_stats().variance == pytest.approx(np.var([1] * 5 + [0] * 10, ddof=1))
    assert math.isnan(ProportionStats.empty().proportion)
    with pytest.raises(ValueError, match="exceed"):
        ProportionStats(3, 4)
    with pytest.raises(ValueError, match=">= 0"):
        ProportionStats(-1, 0)


def test_validation() -> None:
    with pytest.raises(ValueError, match="finite"):
        MeanStats(3, math.inf, 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        MeanStats(3, 1.0, -1.0)
    with pytest.raises(ValueError, match="finite"):
        RatioStats(2, math.nan)
    with pytest.raises(ValueError, match="same shape"):
        RatioStats.from_values([1, 2], [1])
    with pytest.raises(ValueError, match="different is_proportion"):
        RatioStats(is_proportion=True) + RatioStats()
    with pytest.raises(ValueError, match="one count per bin"):
        BinnedScores((1, 2), (1,))
    with pytest.raises(ValueError, match=">= 0"):
        BinnedScores((1, -2), (1, 1))
    with pytest.raises(ValueError, match="different bins"):
        BinnedScores.empty(2) + BinnedScores.empty(3)
    with pytest.raises(ValueError, match="4x4"):
        ConfusionStats(1, (0.0, 0.0, 0.0, 0.0), ((0.0,) * 4,) * 3)
    with pytest.raises(ValueError, match="4x4"):
        ConfusionStats(1, (0.0, 0.0, 0.0, 0.0), ((0.0,) * 3,) * 4)
    with pytest.raises(ValueError, match="unknown measure"):
        ConfusionStats().ratio_stats("specificity")


def test_adding_other_types_is_not_implemented() -> None:
    for value in (
        MeanStats(),
        ProportionStats(),
        RatioStats(),
        ConfusionStats(),
        BinnedScores.empty(2),
        ClusteredHistogram.empty([0.0, 1.0]),
    ):
        with pytest.raises(TypeError):
            value + 1  # type: ignore[operator]


def test_ratio_delta_method_variance_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(1, 20, 800).astype(float)
    x = rng.gamma(2.0, 3.0, 800) * y
    s = RatioStats.from_values(x, y)
    r = x.sum() / y.sum()
    # Deng et al. (2018): Var(mean(x)/mean(y)) = Var(x - r y) / (n mean(y)^2)
    direct = np.var(x - r * y, ddof=1) / (len(x) * y.mean() ** 2)
    assert s.ratio == pytest.approx(r) == s.mean
    assert s.variance_of_ratio == pytest.approx(direct, rel=1e-9)
    assert math.isnan(RatioStats().ratio)
    assert math.isnan(RatioStats.from_values([1.0], [2.0]).variance_of_ratio)
    assert RatioStats.empty(is_proportion=True).is_proportion


def test_confusion_ratios_equal_ratios_of_per_unit_counts() -> None:
    rng = np.random.default_rng(2)
    tp, fp, tn, fn = (rng.integers(0, 6, 300) for _ in range(4))
    confusion = ConfusionStats.from_unit_counts(tp, fp, tn, fn)
    half = ConfusionStats.from_unit_counts(tp[:150], fp[:150], tn[:150], fn[:150])
    rest = ConfusionStats.from_unit_counts(tp[150:], fp[150:], tn[150:], fn[150:])
    assert half + rest == confusion
    assert ConfusionStats.empty() + confusion == confusion
    expected = {
        "accuracy": (tp + tn, tp + fp + tn + fn),
        "precision": (tp, tp + fp),
        "recall": (tp, tp + fn),
        "f1": (2 * tp, 2 * tp + fp + fn),
    }
    for measure, (num, den) in expected.items():
        ours = confusion.ratio_stats(measure)
        direct = RatioStats.from_values(num, den, is_proportion=measure != "f1")
        assert ours.n == direct.n and ours.is_proportion == direct.is_proportion
        for field in ("numerator_sum", "numerator_sum_squares", "denominator_sum",
                      "denominator_sum_squares", "cross_sum"):  # fmt: skip
            assert getattr(ours, field) == pytest.approx(getattr(direct, field))


def test_binned_auc_matches_sklearn_on_exact_scores() -> None:
    roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score  # the demo extra
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 2000)
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # ties on purpose
    levels = np.unique(scores)
    index = np.searchsorted(levels, scores)
    binned = BinnedScores(
        tuple(int(v) for v in np.bincount(index[labels == 1], minlength=levels.size)),
        tuple(int(v) for v in np.bincount(index[labels == 0], minlength=levels.size)),
    )
    auc = auc_delong(binned)
    assert auc.auc == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
    # DeLong's variance from placement values computed pair by pair
    pos, neg = scores[labels == 1], scores[labels == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    expected = v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size
    assert auc.variance == pytest.approx(expected, rel=1e-12)
    assert binned.n_units == 2000
    assert (binned + binned).n_units == 4000


def test_auc_undefined_without_both_labels() -> None:
    assert math.isnan(auc_delong(BinnedScores((3, 4), (0, 0))).auc)
    one = auc_delong(BinnedScores((1, 0), (0, 5)))
    assert one.auc == 0.0  # the only positive scores below every negative
    assert math.isnan(one.variance)


def test_histogram_from_values_matches_sql_definition() -> None:
    edges = [0.0, 1.0, 2.0, 4.0, math.inf]
    units = [[0.5, 1.5, 1.7, 9.0], [3.0], [0.1, 0.2]]
    h = ClusteredHistogram.from_unit_values(units, edges)
    assert h.counts == (3, 2, 1, 1)
    assert h.units == 3 and h.requests == 7
    # square increments telescope to sum_u N_u^2; cross increments too
    assert sum(h.square_increments) == pytest.approx(16 + 1 + 4)
    assert sum(h.cross_increments) == pytest.approx(16 + 1 + 4)
    # unit 1 (values 0.5, 1.5, 1.7, 9.0): L = 1, 3, 3, 4; increments c (2L - c)
    assert h.square_increments[0] == pytest.approx(1 * (2 * 1 - 1) + 2 * (2 * 2 - 2))
    assert h + ClusteredHistogram.empty(edges) == h
    assert ClusteredHistogram.from_unit_values([[], []], edges) == ClusteredHistogram.empty(edges)
    with pytest.raises(ValueError, match="different bin edges"):
        h + ClusteredHistogram.empty([0.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        ClusteredHistogram.from_unit_index([1, 2], [1.0], edges)


def test_histogram_validation() -> None:
    with pytest.raises(ValueError, match="two edges"):
        ClusteredHistogram((0.0,), (), (), (), 0)
    with pytest.raises(ValueError, match="increase"):
        ClusteredHistogram((0.0, 0.0), (0,), (0.0,), (0.0,), 0)
    with pytest.raises(ValueError, match="one entry per bin"):
        ClusteredHistogram((0.0, 1.0), (0,), (0.0, 1.0), (0.0,), 0)
    with pytest.raises(ValueError, match="expected 1 bins"):
        ClusteredHistogram((0.0, 1.0), (0, 0), (0.0, 0.0), (0.0, 0.0), 0)


def test_log_spaced_edges() -> None:
    edges = log_spaced_bin_edges(1.0, 1000.0, 10)
    assert edges[0] == 0.0 and math.isinf(edges[-1])
    assert len(edges) == 3 * 10 + 3
    ratios = np.diff(np.log10(edges[1:-1]))
    assert ratios == pytest.approx(0.1)
    # the SQL bin index formula of the docstring
    for x in (0.5, 1.0, 3.7, 999.0, 5000.0):
        sql_bin = 0 if x < 1.0 else min(1 + math.floor(10 * math.log10(x / 1.0)), len(edges) - 2)
        assert edges[sql_bin] <= x < edges[sql_bin + 1]
    with pytest.raises(ValueError):
        log_spaced_bin_edges(0.0, 1.0)
