"""abstats.stats: the statistics core (pure: numpy and scipy; no I/O, no abstats imports; the tests
check it against statsmodels, which is a development dependency only).

Everything works on sufficient statistics that SQL aggregates in one ``GROUP BY`` (each type's
docstring lists the exact aggregates) and that add with ``+`` across weight epochs and shards.

Sufficient statistics (frozen dataclasses, ``+``, ``.empty()``)
    ``MeanStats(n, sum, sum_squares)``: per-unit values (Welch).
    ``ProportionStats(n, successes)``: units with a 0/1 outcome (Newcombe / Agresti-Caffo,
    valid at 0 and 1).
    ``RatioStats(n, numerator_sum, numerator_sum_squares, denominator_sum,
    denominator_sum_squares, cross_sum, is_proportion=False)``: a ratio of sums over units
    (delta method); request-level measures clustered by unit. An error rate is
    ``is_proportion=True`` (numerator = the unit's errors, denominator = its calls).
    ``ConfusionStats``: per-unit confusion counts; ``.ratio_stats("precision" | "recall" |
    "accuracy" | "f1")``. Log loss is a ``RatioStats`` (per-unit sum of losses / requests).
    ``BinnedScores(positives, negatives, units=None, clusters=None)``: label counts per score bin
    (AUC, DeLong), with ``ScoreClusters`` (per-unit moments) for the variance clustered by unit.
    ``ClusteredHistogram(bin_edges, counts, square_increments, cross_increments, units)`` on
    ``log_spaced_bin_edges()``: latency quantiles with a clustered Woodruff interval.

Comparison
    ``InferenceDesign(method, alpha, mde_relative, max_units_per_variant, spending,
    min_units_per_variant, min_information_increment, calibrate_to_horizon)``.
    ``compare(control, treatment, *, design, alternative, relative, margin, margin_relative,
    previous, quantile) -> ComparisonResult``; ``compare_stratified(strata, ..., weighting,
    assignment_probabilities)`` for one ``(control, treatment)`` pair per weight epoch.
    Thread the state: store ``result.state.to_dict()`` in the snapshot and pass
    ``previous=SequentialState.from_dict(...)`` at the next look of the same metric and variant.
    ``ComparisonResult.to_dict()`` is plain JSON (NaN and infinities become ``None``); only
    ``status == "ok"`` results are ever ``significant`` or ``non_inferior``.
    A guardrail is ``alternative="less"`` (lower is better) or ``"greater"`` with a ``margin``:
    ``compare(ProportionStats(15000, 0), ProportionStats(15000, 0), design=..., alternative="less",
    relative=False, margin=0.01, margin_relative=False).non_inferior is True``.

Covariate adjustment (CUPED)
    ``CovariateStats(n, sum_y, sum_y2, sum_x, sum_x2, sum_xy)`` per (arm, stratum);
    ``cuped(strata) -> CupedAdjustment(theta, mean_x, variance_reduction, strata)``: one pooled
    ``theta``, the adjusted outcomes as ``MeanStats`` strata for ``compare_stratified``.

Sequential inference
    Mixture SPRT (Johari et al. 2017; Howard et al. 2021): ``always_valid_p_value``,
    ``confidence_sequence``, ``tuned_mixing_variance``, ``optimal_mixing_ratio``, ``mixing_grid``
    (the grid mixture over several effect sizes); with a planned
    horizon, calibrated for continuous monitoring up to it: ``horizon_test``,
    ``horizon_p_value``, ``horizon_log_threshold``, ``mixture_boundary``.
    Group sequential (Lan and DeMets 1983; Jennison and Turnbull 2000, ch. 19):
    ``spending_boundaries``, ``alpha_spent``, ``crossing_probability``,
    ``stopping_probabilities``, ``classical_boundaries``.

Checks
    ``srm_check``, ``srm_check_epochs`` (with ``EpochCounts``), ``expected_counts``;
    ``holm``, ``benjamini_hochberg``; ``cochran_q`` (heterogeneity across segments);
    ``psi``, ``jensen_shannon_distance``,
    ``chi_square_homogeneity``, ``binned_ks``, ``drift_check``, ``flag_drift``;
    ``minimum_sample_gate``.

Per-arm estimates
    ``estimate(stats, quantile=None) -> Estimate(value, std_error, ci_lower, ci_upper, units,
    events)`` for every sufficient statistic (binomial/Wilson, Welch, delta method, DeLong,
    Woodruff).

Planning and allocation
    ``required_units_per_arm``, ``sample_size_per_arm``, ``fixed_power``, ``sequential_power``,
    ``sequential_units_per_arm`` (with ``required_drift``, the planned sample of a sequential
    design);
    ``thompson_allocation``.

Reference implementations (tested against statsmodels and scipy)
    ``two_proportion_z_test``, ``welch_t_test``, ``wilson_interval``, ``newcombe_interval``,
    ``agresti_caffo_interval``, ``agresti_caffo_test``, ``auc_delong``, ``auc_difference_test``,
    ``clustered_quantile``.
"""

from abstats.stats._always_valid import (
    always_valid_p_value,
    confidence_sequence,
    horizon_log_threshold,
    horizon_p_value,
    horizon_test,
    mixing_grid,
    mixture_boundary,
    optimal_mixing_ratio,
    tuned_mixing_variance,
)
from abstats.stats._bandit import thompson_allocation
from abstats.stats._classification import AucEstimate, auc_delong, auc_difference_test
from abstats.stats._compare import ArmStats, Weighting, compare, compare_stratified
from abstats.stats._cuped import CovariateStats, CupedAdjustment, cuped
from abstats.stats._design import (
    Alternative,
    InferenceDesign,
    InferenceMethod,
    SequentialState,
    SpendingKind,
)
from abstats.stats._drift import (
    binned_ks,
    chi_square_homogeneity,
    drift_check,
    flag_drift,
    jensen_shannon_distance,
    psi,
)
from abstats.stats._estimate import Estimate, estimate
from abstats.stats._gates import minimum_sample_gate
from abstats.stats._group_sequential import (
    alpha_spent,
    classical_boundaries,
    crossing_probability,
    spending_boundaries,
    stopping_probabilities,
)
from abstats.stats._heterogeneity import Heterogeneity, cochran_q
from abstats.stats._multiplicity import benjamini_hochberg, holm
from abstats.stats._power import (
    MetricKind,
    fixed_power,
    required_drift,
    required_units_per_arm,
    sample_size_per_arm,
    sequential_power,
    sequential_units_per_arm,
)
from abstats.stats._quantile import QuantileEstimate, clustered_quantile
from abstats.stats._results import (
    ComparisonResult,
    DriftResult,
    GateResult,
    SrmResult,
    Status,
)
from abstats.stats._srm import (
    EpochCounts,
    SrmMethod,
    expected_counts,
    srm_check,
    srm_check_epochs,
)
from abstats.stats._sufficient import (
    AUC_CLUSTER_DEGREE,
    BinnedScores,
    ClusteredHistogram,
    ConfusionStats,
    MeanStats,
    ProportionStats,
    RatioStats,
    ScoreClusters,
    log_spaced_bin_edges,
    score_basis_codes,
    score_moments,
)
from abstats.stats._tests import (
    TestOutcome,
    agresti_caffo_interval,
    agresti_caffo_test,
    newcombe_interval,
    two_proportion_z_test,
    welch_t_test,
    wilson_interval,
)

__all__ = [
    "AUC_CLUSTER_DEGREE",
    "Alternative",
    "ArmStats",
    "AucEstimate",
    "BinnedScores",
    "ClusteredHistogram",
    "ComparisonResult",
    "ConfusionStats",
    "CovariateStats",
    "CupedAdjustment",
    "DriftResult",
    "EpochCounts",
    "Estimate",
    "GateResult",
    "Heterogeneity",
    "InferenceDesign",
    "InferenceMethod",
    "MeanStats",
    "MetricKind",
    "ProportionStats",
    "QuantileEstimate",
    "RatioStats",
    "ScoreClusters",
    "SequentialState",
    "SpendingKind",
    "SrmMethod",
    "SrmResult",
    "Status",
    "TestOutcome",
    "Weighting",
    "agresti_caffo_interval",
    "agresti_caffo_test",
    "alpha_spent",
    "always_valid_p_value",
    "auc_delong",
    "auc_difference_test",
    "benjamini_hochberg",
    "binned_ks",
    "chi_square_homogeneity",
    "classical_boundaries",
    "clustered_quantile",
    "cochran_q",
    "compare",
    "compare_stratified",
    "confidence_sequence",
    "crossing_probability",
    "cuped",
    "drift_check",
    "estimate",
    "expected_counts",
    "fixed_power",
    "flag_drift",
    "holm",
    "horizon_log_threshold",
    "horizon_p_value",
    "horizon_test",
    "jensen_shannon_distance",
    "log_spaced_bin_edges",
    "minimum_sample_gate",
    "mixing_grid",
    "mixture_boundary",
    "newcombe_interval",
    "optimal_mixing_ratio",
    "psi",
    "required_drift",
    "required_units_per_arm",
    "sample_size_per_arm",
    "score_basis_codes",
    "score_moments",
    "sequential_power",
    "sequential_units_per_arm",
    "spending_boundaries",
    "srm_check",
    "srm_check_epochs",
    "stopping_probabilities",
    "thompson_allocation",
    "tuned_mixing_variance",
    "two_proportion_z_test",
    "welch_t_test",
    "wilson_interval",
]
