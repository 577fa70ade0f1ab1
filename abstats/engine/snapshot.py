"""The analysis snapshot: what one analysis run found. Stored as JSON in
``analysis_snapshot.result``; built by :mod:`abstats.engine.summarize`, judged by
:mod:`abstats.engine.rules`, read by the reports and the API.

This module is the contract between analysis, control and reports: change it with all three in
mind. Every per-variant value carries its standard error and 95% interval, for every metric kind,
so nothing downstream has to rebuild statistics (the bandit and "units still needed" use them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from abstats.engine.specs import Amount

Status = Literal["ok", "not_enough_data", "degenerate", "before_horizon"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantValue(_Model):
    """One metric's value in one variant (pooled over weight epochs), with its standard error
    and 95% interval (normal approximation of the estimator the comparison uses: binomial,
    Welch, delta method for ratios and request-level measures clustered by unit, DeLong for AUC,
    Woodruff for quantiles). ``None`` when it cannot be computed."""

    units: int = Field(description="Units with at least one exposure/prediction in the variant.")
    events: int = Field(
        description="Events the metric counts (units with the outcome, requests, ...)."
    )
    value: float | None = Field(
        description="The metric's estimate; None when it cannot be computed."
    )
    std_error: float | None = None
    ci_lower: float | None = None
    ci_upper: float | None = None


class Adjustment(_Model):
    """Covariate adjustment (CUPED) of a comparison: the coefficient, the share of the outcome's
    variance it removed, and the unadjusted result for comparison."""

    covariate: str
    theta: float
    variance_reduction: float = Field(description="1 - adjusted variance / raw variance")
    raw_absolute_effect: float | None = None
    raw_relative_effect: float | None = None
    raw_ci_lower: float | None = None
    raw_ci_upper: float | None = None
    raw_p_value: float | None = None


class Comparison(_Model):
    """A treatment variant against the control on one metric."""

    variant: str
    status: Status = "ok"
    message: str = ""
    absolute_effect: float | None = None
    relative_effect: float | None = None
    ci_lower: float | None = Field(
        default=None, description="CI of the relative effect (absolute if relative is impossible)"
    )
    ci_upper: float | None = None
    ci_scale: Literal["relative", "absolute"] = "relative"
    p_value: float | None = Field(
        default=None, description="Always-valid / sequential / fixed p-value per the design"
    )
    p_value_adjusted: float | None = Field(
        default=None, description="After Holm across treatments and primaries"
    )
    significant: bool = False
    better: bool | None = Field(
        default=None, description="Significant in the metric's good direction"
    )
    worse: bool | None = Field(
        default=None, description="Significant in the metric's bad direction"
    )
    non_inferior: bool | None = Field(
        default=None, description="Guardrails: proven not worse than the margin"
    )
    p_value_non_inferiority: float | None = Field(
        default=None,
        description="Guardrails: the one-sided non-inferiority test's p-value (against the margin)",
    )
    margin: Amount | None = None
    inference: str = "always_valid"
    adjustment: Adjustment | None = Field(
        default=None, description="Covariate adjustment: the effect above is the adjusted one"
    )

    @property
    def decision_p_value(self) -> float | None:
        """The p-value a decision rests on: Holm-adjusted where a family was adjusted, else the
        comparison's own."""
        return self.p_value_adjusted if self.p_value_adjusted is not None else self.p_value

    @field_validator("margin", mode="before")
    @classmethod
    def _margin(cls, v: object) -> object:
        # snapshots stored before margins were typed hold the text ("10%", "0.01")
        return Amount.parse(v) if isinstance(v, str | int | float) else v


class SegmentEffect(_Model):
    """One segment's effect of a treatment (difference ``t - c``, this look's fixed-sample test)."""

    segment: str = Field(description="The feature's value in the units' first prediction")
    control_units: int
    treatment_units: int
    status: Status = "ok"
    control_value: float | None = None
    treatment_value: float | None = None
    absolute_effect: float | None = None
    relative_effect: float | None = None
    ci_lower: float | None = Field(default=None, description="95% interval of t - c")
    ci_upper: float | None = None
    p_value: float | None = None
    p_value_bh: float | None = Field(
        default=None, description="Benjamini-Hochberg across this breakdown's segments"
    )
    significant: bool = Field(default=False, description="p_value_bh below alpha")


class SegmentBreakdown(_Model):
    """A metric broken down by a feature for one treatment. Reported only: no rule reads it."""

    feature: str
    variant: str
    segments: list[SegmentEffect]
    left_out: int = Field(default=0, description="Segments beyond the largest ones shown")
    heterogeneity_q: float | None = Field(default=None, description="Cochran's Q")
    heterogeneity_df: int = 0
    heterogeneity_p_value: float | None = None
    i_squared: float | None = None


class MetricResult(_Model):
    metric: str
    kind: str
    role: Literal["primary", "guardrail", "secondary"]
    direction: Literal["increase", "decrease"] | None
    variants: dict[str, VariantValue]
    comparisons: list[Comparison]
    window: str | None = Field(
        default=None, description="Attribution window: outcomes count only this long after exposure"
    )
    pending_units: dict[str, int] = Field(
        default_factory=dict,
        description="Attribution window: units per variant left out until their window closes",
    )
    segments: list[SegmentBreakdown] = Field(
        default_factory=list, description="segment_by: per-segment effects (never decide)"
    )


class SrmResult(_Model):
    observed: dict[str, int]
    expected: dict[str, float]
    p_value: float | None
    threshold: float
    flagged: bool
    method: str


class DriftCheck(_Model):
    variant: str
    target: str = Field(description="'score', 'feature:<name>' or 'outcome:<name>'")
    reference: str = Field(
        description="What it is compared with, e.g. 'control' or 'baseline window'"
    )
    psi: float | None
    js_distance: float | None
    p_value: float | None
    p_value_adjusted: float | None
    level: Literal["ok", "warn", "alert"]
    flagged: bool
    consecutive_windows: int = 0
    reference_counts: list[float] = Field(default_factory=list)
    current_counts: list[float] = Field(default_factory=list)
    bin_labels: list[str] = Field(default_factory=list)


class Gates(_Model):
    """Minimum-sample gates of the policy: no decision before all are met."""

    min_units_met: bool
    min_events_met: bool
    min_runtime_met: bool
    units_per_variant: dict[str, int]
    primary_events_per_variant: dict[str, int]
    runtime_seconds: float

    @property
    def all_met(self) -> bool:
        return self.min_units_met and self.min_events_met and self.min_runtime_met


class PlanProgress(_Model):
    """Progress of one primary metric toward its planned sample (``abstats.engine.plan``)."""

    metric: str
    units_per_variant: int = Field(description="The smallest variant's units so far.")
    planned_units_per_variant: int | None = Field(
        description="The policy's max_units_per_variant, else the plan for the policy's mde "
        "from the control's observed value (None while it cannot support one)."
    )
    source: Literal["policy", "observed_control"]


class SnapshotResult(_Model):
    experiment: str
    cutoff: datetime
    weight_epoch: int
    weights: dict[str, float] = Field(description="Current weights (the latest epoch)")
    inference: str
    alpha: float
    units: dict[str, int]
    exposures_by_epoch: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="epoch -> variant -> units first exposed"
    )
    srm_excluded_units: int = Field(
        default=0,
        description="Units first exposed while a router switched to new weights (until it "
        "confirmed them, plus a settle window): left out of the SRM check",
    )
    mixed_exposure_units: int = 0
    mixed_exposure_share: float = 0.0
    last_event_at: datetime | None = None
    runtime_seconds: float = 0.0
    gates: Gates
    metrics: list[MetricResult]
    srm: SrmResult | None
    drift: list[DriftCheck] = Field(default_factory=list)
    rollback_tests: int = Field(
        default=1,
        description="Tests that can roll back (guardrails x treatments, + primaries x treatments "
        "when on_primary_worse): each runs at alpha / rollback_tests",
    )
    progress: list[PlanProgress] = Field(
        default_factory=list,
        description="Every primary metric's progress toward its planned sample",
    )
    recommendation: str = Field(
        default="keep running", description="What the statistics alone suggest"
    )
    reason: str = ""
    sequential_state: dict[str, object] = Field(
        default_factory=dict,
        description="State carried to the next look (previous always-valid p-values, group-sequential looks)",
    )
