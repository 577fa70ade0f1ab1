"""Segments (issue 17): per-segment effects equal a per-segment reference computation, BH equals
statsmodels' fdr_bh, Cochran's Q holds its level in A/A, and segments never decide."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.meta_analysis import combine_effects
from statsmodels.stats.multitest import multipletests

from abstats.engine.segments import breakdown
from abstats.engine.words import segment_summary
from abstats.stats import InferenceDesign, ProportionStats, cochran_q, compare_stratified

FIXED = InferenceDesign(
    method="fixed", alpha=0.05, max_units_per_variant=2, min_units_per_variant=2
)


def _segments(rng: np.random.Generator, rates: dict[str, tuple[float, float]], n: int):
    """segment -> variant -> epoch -> ProportionStats (two epochs: 90/10, then 50/50)."""
    out = {}
    for segment, (pc, pt) in rates.items():
        arms: dict[str, dict[int, ProportionStats]] = {"c": {}, "t": {}}
        for epoch, share in ((0, 0.1), (1, 0.5)):
            for arm, p, s in (("c", pc, 1 - share), ("t", pt, share)):
                size = int(n * s)
                arms[arm][epoch] = ProportionStats(size, int(rng.binomial(size, p)))
        out[segment] = arms
    return out


def test_segment_effects_equal_a_per_segment_reference() -> None:
    rng = np.random.default_rng(5)
    rates = {"de": (0.10, 0.13), "fr": (0.10, 0.10), "us": (0.20, 0.21), "": (0.1, 0.1)}
    segments = _segments(rng, rates, 20_000)
    result = breakdown("country", segments, "c", "t", 0.05)
    assert [s.segment for s in result.segments] == ["us", "de", "fr", ""] or len(
        result.segments
    ) == 4
    ps = []
    effects, ses = [], []
    for s in result.segments:
        arms = segments[s.segment]
        ref = compare_stratified(
            [(arms["c"][e], arms["t"][e]) for e in (0, 1)],
            design=FIXED,
            relative=False,
            weighting="cmh",
        )
        assert s.absolute_effect == pytest.approx(ref.absolute_effect)
        assert (s.ci_lower, s.ci_upper) == pytest.approx((ref.ci_lower, ref.ci_upper))
        assert s.p_value == pytest.approx(ref.p_value)
        assert s.control_units == sum(a.n for a in arms["c"].values())
        ps.append(ref.p_value)
        effects.append(ref.absolute_effect)
        ses.append(ref.standard_error)
    bh = multipletests(ps, method="fdr_bh")[1]
    assert [s.p_value_bh for s in result.segments] == pytest.approx(list(bh))
    assert [s.significant for s in result.segments] == [bool(p <= 0.05) for p in bh]
    assert [s.segment for s in result.segments if s.significant] == ["de"]  # +3 points
    # Cochran's Q against statsmodels' meta-analysis
    reference = combine_effects(np.array(effects), np.array(ses) ** 2)
    assert result.heterogeneity_q == pytest.approx(reference.q)
    assert result.heterogeneity_df == 3
    text = segment_summary("conversion", result)
    assert text.startswith("conversion by country in t: 4 segments; significant after BH: de ")
    assert f"heterogeneity Q={result.heterogeneity_q:.3g} (df 3)" in text


def test_cochran_q_holds_its_level_in_a_a() -> None:
    rng = np.random.default_rng(6)
    runs, rejected = 400, 0
    rates = {s: (r, r) for s, r in zip("abcde", (0.05, 0.1, 0.1, 0.2, 0.3), strict=True)}
    for _ in range(runs):
        result = breakdown("f", _segments(rng, rates, 2000), "c", "t", 0.05)
        assert result.heterogeneity_p_value is not None
        rejected += result.heterogeneity_p_value <= 0.05
    assert rejected / runs <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / runs), rejected / runs


def test_q_needs_two_segments_and_bounds() -> None:
    assert math.isnan(cochran_q([0.1], [0.01]).p_value)
    same = cochran_q([0.1, 0.1, 0.1], [0.02, 0.03, 0.05])
    assert same.q == pytest.approx(0.0) and same.p_value == pytest.approx(1.0)
