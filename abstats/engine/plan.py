"""Planning before launch: units per variant and days to a decision.

Pure: :class:`PlanRequest` in, :class:`Plan` out, from the power functions of
:mod:`abstats.stats` (fixed designs: the normal power statsmodels computes; sequential designs:
the design's own boundaries, by recursive integration at ``looks`` equally spaced information
fractions). ``POST /v1/plan`` and ``abstats plan`` call :func:`plan`; the snapshot's progress
toward the planned sample for each primary metric comes from :func:`planned_units`.

Time to a decision counts *information*, not raw units: the analysis stratifies by weight epoch
with Cochran-Mantel-Haenszel weights (``docs/statistics.md``), so an epoch in which the candidate
gets a share ``s`` of the traffic adds ``T * tau * 2 (1 - s) s / (1 - s + s)`` balanced-unit
equivalents per arm over ``tau`` days at ``T`` units per day (for one candidate; with ``k``
candidates each gets ``s / k``). A 5% first ramp step therefore adds about a tenth of what a
50/50 day adds, and the planner says so.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from abstats.engine import words
from abstats.engine.specs import Amount, parse_duration
from abstats.stats import (
    InferenceDesign,
    fixed_power,
    sample_size_per_arm,
    sequential_power,
    sequential_units_per_arm,
)

PlanKind = Literal["proportion", "mean", "ratio", "classification", "latency", "error_rate"]
Method = Literal["always_valid", "group_sequential", "fixed"]
# kinds whose variance follows from the rate; every other kind needs the per-unit sd
_RATE_KINDS = ("proportion", "error_rate")
_MAX_UNITS = 10**12  # beyond this a plan is not a plan


class PlanRamp(BaseModel):
    """A ramp as the policy walks it: candidate shares (percent of all traffic, every
    candidate together) below 100, each held for ``step_duration``; the last is held until the
    decision."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: list[float] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0],
        min_length=1,
        description="Candidate shares in percent, increasing, each in (0, 100).",
    )
    step_duration: str | float = Field(
        default="1d", description="How long each step but the last is held: '12h', '1d'."
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if any(not 0 < s < 100 for s in v):
            raise ValueError(
                "ramp steps are candidate shares in percent, each in (0, 100): a step of 100 "
                "is the promotion itself and collects no comparison"
            )
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("ramp steps must increase, e.g. [5, 25, 50]")
        return v

    @field_validator("step_duration")
    @classmethod
    def _duration(cls, v: str | float) -> str | float:
        if parse_duration(v) <= 0:
            raise ValueError("step_duration must be positive, e.g. '1d'")
        return v


class PlanRequest(BaseModel):
    """What ``POST /v1/plan`` and ``abstats plan`` read (``docs/api.md``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: PlanKind = Field(description="The primary metric's kind.")
    baseline: float = Field(
        description="Control's expected value: a rate in (0, 1) for proportion and error_rate, "
        "else the per-unit mean."
    )
    sd: float | None = Field(
        default=None,
        gt=0,
        description="Per-unit standard deviation; required for every kind but proportion and "
        "error_rate.",
    )
    mde: str | float = Field(
        description="Minimum detectable effect: relative ('5%') or absolute (0.002)."
    )
    traffic_per_day: float = Field(gt=0, description="Units entering the experiment per day.")
    split: float | None = Field(
        default=None,
        gt=0,
        lt=100,
        description="Candidate share in percent (every candidate together) for a fixed split; "
        "50 when neither split nor ramp is given.",
    )
    ramp: PlanRamp | None = None
    candidates: int = Field(
        default=1, ge=1, le=20, description="Candidates compared with the control."
    )
    inference: Method = "always_valid"
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    power: float = Field(default=0.8, gt=0.5, lt=1)
    looks: int = Field(
        default=100,
        ge=1,
        le=200,
        description="Analyses up to the planned sample (sequential designs; equally spaced in "
        "information). Beyond about 100 the always-valid boundary is practically continuous.",
    )

    @field_validator("mde")
    @classmethod
    def _mde(cls, v: str | float) -> str | float:
        if Amount.parse(v).value <= 0:
            raise ValueError("mde must be positive: the smallest change worth detecting, e.g. '5%'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> PlanRequest:
        if self.split is not None and self.ramp is not None:
            raise ValueError("give either split or ramp, not both")
        if self.kind in _RATE_KINDS:
            if not 0 < self.baseline < 1:
                raise ValueError(f"a {self.kind} baseline is a rate strictly between 0 and 1")
            mde = self.mde_amount
            treated = self.baseline * (1 + mde.value) if mde.relative else self.baseline + mde.value
            if not 0 < treated < 1:
                raise ValueError(
                    f"baseline {self.baseline:g} changed by mde {mde} leaves (0, 1): "
                    "use a smaller mde"
                )
        elif self.sd is None:
            raise ValueError(f"a {self.kind} metric needs sd, the per-unit standard deviation")
        if self.mde_amount.relative and self.baseline == 0:
            raise ValueError("a relative mde needs a non-zero baseline; give an absolute mde")
        return self

    @cached_property
    def mde_amount(self) -> Amount:
        return Amount.parse(self.mde)

    @property
    def stats_kind(self) -> Literal["proportion", "mean"]:
        return "proportion" if self.kind in _RATE_KINDS else "mean"

    def schedule(self) -> list[tuple[float, float | None]]:
        """``(candidate share in [0, 1], days held or None for "until the decision")``."""
        if self.ramp is not None:
            days = parse_duration(self.ramp.step_duration) / 86400.0
            steps = [s / 100.0 for s in self.ramp.steps]
            return [(s, days) for s in steps[:-1]] + [(steps[-1], None)]
        return [((self.split if self.split is not None else 50.0) / 100.0, None)]


class PlanStep(BaseModel):
    model_config = ConfigDict(extra="forbid")
    candidate_share: float = Field(description="Percent of traffic, every candidate together.")
    days: float = Field(description="Days spent in the step before the planned sample.")
    control_units: int
    units_per_candidate: int
    information_per_day: float = Field(
        description="Balanced-unit equivalents per arm added per day (CMH weights)."
    )


class Plan(BaseModel):
    """Units and days for one design; ``summary`` is the sentence a person reads."""

    model_config = ConfigDict(extra="forbid")
    inference: Method
    alpha_per_comparison: float
    power: float = Field(description="Power at the planned sample, as computed for the design.")
    units_per_variant: int = Field(
        description="Planned sample: units per variant in a balanced split (the policy's "
        "max_units_per_variant)."
    )
    fixed_units_per_variant: int = Field(description="The same for a fixed-horizon test.")
    sequential_inflation: float = Field(description="units_per_variant / fixed_units_per_variant.")
    days_to_decision: float = Field(
        description="Days until the planned sample's information is reached (at the latest, for "
        "a sequential design)."
    )
    control_units: int = Field(description="Control units by then.")
    units_per_candidate: int = Field(description="Units in each candidate by then.")
    total_units: int
    steps: list[PlanStep]
    summary: str


def _design(method: Method, alpha: float, mde: Amount, horizon: int) -> InferenceDesign:
    return InferenceDesign(
        method=method,
        alpha=alpha,
        mde_relative=mde.value if mde.relative else None,
        max_units_per_variant=horizon,
        min_units_per_variant=2,
    )


def required_units(
    request: PlanRequest, *, with_power: bool = True
) -> tuple[int, int, float, float]:
    """``(planned units per variant, fixed-horizon units, power at the plan, alpha per
    comparison)``. Sequential designs: the horizon at which the design's own boundaries reach
    the requested power (:func:`abstats.stats.sequential_units_per_arm`); the power reported is
    :func:`abstats.stats.sequential_power` at the rounded plan (NaN without ``with_power``)."""
    mde = request.mde_amount
    alpha = request.alpha / request.candidates  # Bonferroni: Holm is never more conservative
    fixed_units = math.ceil(
        sample_size_per_arm(
            request.baseline,
            mde.value,
            alpha=alpha,
            power=request.power,
            kind=request.stats_kind,
            sd=request.sd,
            relative=mde.relative,
        )
        - 1e-9
    )
    units = fixed_units
    if request.inference != "fixed":
        planned = sequential_units_per_arm(
            request.inference,
            baseline=request.baseline,
            mde=mde.value,
            alpha=alpha,
            power=request.power,
            kind=request.stats_kind,
            sd=request.sd,
            relative=mde.relative,
            looks=request.looks,
        )
        units = math.ceil(planned - 1e-9)
    if units > _MAX_UNITS:
        raise ValueError("more than 10^12 units per variant: raise the mde or lower the power")
    if not with_power:
        return units, fixed_units, math.nan, alpha
    if request.inference == "fixed":
        achieved = fixed_power(
            request.baseline,
            mde.value,
            units,
            alpha=alpha,
            kind=request.stats_kind,
            sd=request.sd,
            relative=mde.relative,
        )
    else:
        achieved = sequential_power(
            _design(request.inference, alpha, mde, units),
            baseline=request.baseline,
            mde=mde.value,
            kind=request.stats_kind,
            sd=request.sd,
            units_per_arm=units,
            looks=request.looks,
            relative=mde.relative,
        )
    return units, fixed_units, achieved, alpha


def _information_rate(share: float, candidates: int) -> float:
    """Balanced-unit equivalents per arm per unit of traffic in an epoch with this candidate
    share (CMH weight ``2 n_c n_t / (n_c + n_t)`` per unit of time)."""
    control, candidate = 1.0 - share, share / candidates
    return 2.0 * control * candidate / (control + candidate)


def timeline(
    schedule: Sequence[tuple[float, float | None]],
    traffic_per_day: float,
    candidates: int,
    units: float,
) -> list[PlanStep]:
    """The steps walked until ``units`` balanced-unit equivalents per arm are reached."""
    steps: list[PlanStep] = []
    remaining = units
    for share, held in schedule:
        rate = traffic_per_day * _information_rate(share, candidates)
        days = remaining / rate if held is None else min(held, remaining / rate)
        remaining -= rate * days
        steps.append(
            PlanStep(
                candidate_share=share * 100.0,
                days=days,
                control_units=round(traffic_per_day * days * (1 - share)),
                units_per_candidate=round(traffic_per_day * days * share / candidates),
                information_per_day=rate,
            )
        )
        if remaining <= 1e-9:
            break
    return steps


def plan(request: PlanRequest) -> Plan:
    """Units per variant and days to a decision for ``request`` (see the module docstring)."""
    units, fixed_units, power, alpha = required_units(request)
    steps = timeline(request.schedule(), request.traffic_per_day, request.candidates, units)
    days = sum(s.days for s in steps)
    control = sum(s.control_units for s in steps)
    per_candidate = sum(s.units_per_candidate for s in steps)
    result = Plan(
        inference=request.inference,
        alpha_per_comparison=alpha,
        power=power,
        units_per_variant=units,
        fixed_units_per_variant=fixed_units,
        sequential_inflation=units / fixed_units,
        days_to_decision=days,
        control_units=control,
        units_per_candidate=per_candidate,
        total_units=control + per_candidate * request.candidates,
        steps=steps,
        summary="",
    )
    return result.model_copy(update={"summary": words.plan_summary(request, result)})


def planned_units(
    *,
    kind: str,
    control_value: float | None,
    control_sd: float | None,
    mde: Amount,
    alpha: float,
    power: float = 0.8,
    inference: Method,
    candidates: int = 1,
) -> int | None:
    """The planned sample for a running experiment's primary metric, from the control's observed
    value (and per-unit sd): what :func:`plan` would have said. ``None`` when the control's value
    cannot support a plan (no data, a rate of 0 or 1, a zero sd)."""
    if control_value is None or not math.isfinite(control_value):
        return None
    stats_kind = "proportion" if kind in _RATE_KINDS else "mean"
    if stats_kind == "mean" and (control_sd is None or not control_sd > 0):
        return None
    try:
        request = PlanRequest(
            kind="proportion" if stats_kind == "proportion" else "mean",
            baseline=control_value,
            sd=control_sd if stats_kind == "mean" else None,
            mde=str(mde) if mde.relative else mde.value,
            traffic_per_day=1.0,
            candidates=candidates,
            inference=inference,
            alpha=alpha,
            power=power,
            looks=20,
        )
        return required_units(request, with_power=False)[0]
    except ValueError:
        return None
