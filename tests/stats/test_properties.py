"""Property-based tests (hypothesis) for the invariants the issue names."""

from __future__ import annotations

import itertools
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abstats.stats import (
    BinnedScores,
    ClusteredHistogram,
    ConfusionStats,
    InferenceDesign,
    MeanStats,
    ProportionStats,
    RatioStats,
    SequentialState,
    benjamini_hochberg,
    compare,
    holm,
    jensen_shannon_distance,
    psi,
    srm_check,
)

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
small = st.integers(min_value=0, max_value=10_000)


@st.composite
def proportions(draw: st.DrawFn) -> ProportionStats:
    n = draw(st.integers(min_value=0, max_value=50_000))
    return ProportionStats(n, draw(st.integers(min_value=0, max_value=n)))


@st.composite
def means(draw: st.DrawFn) -> MeanStats:
    # integer-valued sums keep floating-point addition exact, so associativity is exact
    values = draw(st.lists(st.integers(-1000, 1000), min_size=0, max_size=30))
    return MeanStats.from_values(values)


@st.composite
def ratios(draw: st.DrawFn) -> RatioStats:
    pairs = draw(st.lists(st.tuples(st.integers(0, 50), st.integers(1, 60)), max_size=30))
    return RatioStats.from_values([x for x, _ in pairs], [y for _, y in pairs])


@st.composite
def confusions(draw: st.DrawFn) -> ConfusionStats:
    rows = draw(st.lists(st.tuples(small, small, small, small), max_size=10))
    return ConfusionStats.from_unit_counts(*(list(column) for column in zip(*rows, strict=True))) if rows else ConfusionStats()  # fmt: skip


@st.composite
def scores(draw: st.DrawFn) -> BinnedScores:
    return BinnedScores(
        tuple(draw(st.lists(small, min_size=4, max_size=4))),
        tuple(draw(st.lists(small, min_size=4, max_size=4))),
    )


EDGES = (0.0, 1.0, 2.0, 5.0, math.inf)


@st.composite
def histograms(draw: st.DrawFn) -> ClusteredHistogram:
    units = draw(st.lists(st.lists(st.sampled_from([0.5, 1.5, 3.0, 7.0]), max_size=6), max_size=8))
    return ClusteredHistogram.from_unit_values(units, EDGES)


@SETTINGS
@given(st.data())
def test_addition_is_associative_with_an_identity(data: st.DataObject) -> None:
    strategy, empty = data.draw(
        st.sampled_from(
            [
                (proportions(), ProportionStats.empty()),
                (means(), MeanStats.empty()),
                (ratios(), RatioStats.empty()),
                (confusions(), ConfusionStats.empty()),
                (scores(), BinnedScores.empty(4)),
                (histograms(), ClusteredHistogram.empty(EDGES)),
            ]
        )
    )
    a, b, c = data.draw(strategy), data.draw(strategy), data.draw(strategy)
    assert (a + b) + c == a + (b + c)
    if not isinstance(a, BinnedScores):  # BinnedScores' unknown unit count becomes explicit
        assert a + empty == a


DESIGNS = [
    InferenceDesign("fixed"),
    InferenceDesign("always_valid", mde_relative=0.05),
    InferenceDesign("always_valid", max_units_per_variant=5_000),
    InferenceDesign("group_sequential", max_units_per_variant=5_000),
]


@SETTINGS
@given(
    control=proportions(),
    treatment=proportions(),
    design=st.sampled_from(DESIGNS),
    alternative=st.sampled_from(["two-sided", "greater", "less"]),
    relative=st.booleans(),
)
def test_p_values_and_intervals_on_proportions(
    control: ProportionStats,
    treatment: ProportionStats,
    design: InferenceDesign,
    alternative: str,
    relative: bool,
) -> None:
    result = compare(control, treatment, design=design, alternative=alternative, relative=relative)  # type: ignore[arg-type]
    check_result(result.status, result.p_value, result.significant, result.alpha)
    if result.status == "ok":
        estimate = result.relative_effect if relative else result.absolute_effect
        assert result.ci_lower <= estimate <= result.ci_upper


@SETTINGS
@given(control=means(), treatment=means(), design=st.sampled_from(DESIGNS), relative=st.booleans())
def test_p_values_and_intervals_on_means(
    control: MeanStats, treatment: MeanStats, design: InferenceDesign, relative: bool
) -> None:
    result = compare(control, treatment, design=design, relative=relative)
    check_result(result.status, result.p_value, result.significant, result.alpha)
    if result.status == "ok":
        estimate = result.relative_effect if relative else result.absolute_effect
        assert result.ci_lower <= estimate <= result.ci_upper


def check_result(status: str, p_value: float, significant: bool, alpha: float) -> None:
    if status == "ok":
        assert 0.0 <= p_value <= 1.0
    else:
        assert not significant  # never a spurious win on degenerate input
    if significant:
        assert p_value <= alpha


@SETTINGS
@given(
    increments=st.lists(
        st.tuples(st.integers(1, 400), st.integers(1, 400), st.floats(0.0, 1.0)),
        min_size=2,
        max_size=12,
    ),
    design=st.sampled_from(DESIGNS[1:]),
    rate=st.floats(0.01, 0.5),
)
def test_sequential_p_values_never_increase(
    increments: list[tuple[int, int, float]], design: InferenceDesign, rate: float
) -> None:
    control = treatment = ProportionStats()
    state = SequentialState()
    previous = 1.0
    for n_c, n_t, lift in increments:
        control = control + ProportionStats(n_c, round(n_c * rate))
        treatment = treatment + ProportionStats(n_t, min(n_t, round(n_t * rate * (1 + lift))))
        result = compare(control, treatment, design=design, previous=state)
        state = result.state
        if result.status == "ok" and not math.isnan(result.p_value):
            assert result.p_value <= previous
            previous = result.p_value


@SETTINGS
@given(st.lists(st.floats(0.0, 1.0), max_size=20))
def test_adjusted_p_values(p_values: list[float]) -> None:
    for adjust in (holm, benjamini_hochberg):
        adjusted = adjust(p_values)
        assert all(raw <= adj <= 1.0 for raw, adj in zip(p_values, adjusted, strict=True))
        order = sorted(range(len(p_values)), key=lambda i: p_values[i])
        assert all(adjusted[i] <= adjusted[j] for i, j in itertools.pairwise(order))
    bh, fwer = benjamini_hochberg(p_values), holm(p_values)
    assert all(b <= h + 1e-12 for b, h in zip(bh, fwer, strict=True))  # FDR is never stricter


@SETTINGS
@given(st.lists(st.tuples(small, small), min_size=2, max_size=8))
def test_srm_and_drift_ranges(counts: list[tuple[int, int]]) -> None:
    observed = {f"v{i}": a for i, (a, _) in enumerate(counts)}
    weights = {f"v{i}": b + 1 for i, (_, b) in enumerate(counts)}
    for method in ("sequential", "chi_square"):
        result = srm_check(observed, weights, method=method)  # type: ignore[arg-type]
        assert result.status == "not_enough_data" or 0.0 <= result.p_value <= 1.0
    reference = [a for a, _ in counts]
    current = [b for _, b in counts]
    if sum(reference) and sum(current):
        assert psi(reference, current) >= 0
        assert 0.0 <= jensen_shannon_distance(reference, current) <= 1.0 + 1e-12
