"""Per-segment effects of a metric (``segment_by``): one fixed-sample comparison per segment at
this look (stratified by weight epoch like the metric's own), Benjamini-Hochberg across the
segments, and Cochran's Q for "one common effect". Descriptive: the rule table never reads them
(``docs/concepts.md``)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from abstats.engine.snapshot import SegmentBreakdown, SegmentEffect
from abstats.stats import (
    ArmStats,
    InferenceDesign,
    benjamini_hochberg,
    cochran_q,
    compare_stratified,
    estimate,
)

MAX_SEGMENTS = 20  # the largest segments by units; the rest are counted in ``left_out``
Arms = Mapping[str, Mapping[int, ArmStats]]


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _n(stats: Mapping[int, ArmStats]) -> int:
    return sum(int(getattr(s, "n", 0)) for s in stats.values())


def _value(stats: Mapping[int, ArmStats]) -> float | None:
    total = None
    for s in stats.values():
        total = s if total is None else total + s  # type: ignore[operator]
    return None if total is None else _finite(estimate(total).value)


def breakdown(
    feature: str,
    segments: Mapping[str, Arms],
    control: str,
    treatment: str,
    alpha: float,
) -> SegmentBreakdown:
    """``treatment`` against ``control`` in every segment (``segments``: segment -> variant ->
    epoch -> statistics)."""
    design = InferenceDesign(
        method="fixed", alpha=alpha, max_units_per_variant=2, min_units_per_variant=2
    )
    size = {
        s: _n(arms.get(control, {})) + _n(arms.get(treatment, {})) for s, arms in segments.items()
    }
    shown = sorted(segments, key=lambda s: (-size[s], s))[:MAX_SEGMENTS]
    effects: list[SegmentEffect] = []
    tested: list[tuple[int, float, float]] = []  # (index, effect, standard error)
    for segment in shown:
        c_arms = segments[segment].get(control, {})
        t_arms = segments[segment].get(treatment, {})
        shared = sorted(
            e for e in set(c_arms) & set(t_arms) if _n({e: c_arms[e]}) and _n({e: t_arms[e]})
        )
        effect = SegmentEffect(
            segment=segment,
            control_units=_n(c_arms),
            treatment_units=_n(t_arms),
            status="not_enough_data",
            control_value=_value(c_arms),
            treatment_value=_value(t_arms),
        )
        if shared:
            result = compare_stratified(
                [(c_arms[e], t_arms[e]) for e in shared],
                design=design,
                relative=False,
                weighting="cmh",
            )
            effect.status = result.status
            if result.status == "ok":
                effect.absolute_effect = _finite(result.absolute_effect)
                effect.relative_effect = _finite(result.relative_effect)
                effect.ci_lower = _finite(result.ci_lower)
                effect.ci_upper = _finite(result.ci_upper)
                effect.p_value = _finite(result.p_value)
                tested.append((len(effects), result.absolute_effect, result.standard_error))
        effects.append(effect)
    adjusted = benjamini_hochberg([effects[i].p_value for i, _, _ in tested])
    for (i, _, _), p in zip(tested, adjusted, strict=True):
        effects[i].p_value_bh = _finite(p)
        effects[i].significant = bool(math.isfinite(p) and p <= alpha)
    q = cochran_q([d for _, d, _ in tested], [se for _, _, se in tested])
    return SegmentBreakdown(
        feature=feature,
        variant=treatment,
        segments=effects,
        left_out=len(segments) - len(shown),
        heterogeneity_q=_finite(q.q),
        heterogeneity_df=q.df,
        heterogeneity_p_value=_finite(q.p_value),
        i_squared=_finite(q.i_squared),
    )
