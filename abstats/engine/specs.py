"""The typed specification of an experiment as the engine reads it: metrics (``docs/concepts.md``),
the policy (``docs/policy.md``) and :class:`ExperimentSpec`, parsed once per run from what is
stored. Pure pydantic: no database, no HTTP."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

MetricKind = Literal["proportion", "mean", "ratio", "classification", "latency", "error_rate"]
MetricRole = Literal["primary", "guardrail", "secondary"]
Direction = Literal["increase", "decrease"]
ClassificationMeasure = Literal["accuracy", "precision", "recall", "f1", "auc", "log_loss"]
LatencyStatistic = Literal["mean", "p50", "p90", "p95", "p99"]


def parse_duration(value: str | int | float) -> float:
    """``"30m"`` -> 1800.0 seconds; numbers are seconds."""
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(
            f"{value!r} is not a duration: use a number and a unit s, m, h, d or w, e.g. '30m'"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class Amount(BaseModel):
    """A margin, lift or MDE: relative (``"5%"`` -> 0.05, relative=True) or absolute (``0.002``)."""

    model_config = ConfigDict(frozen=True)
    value: float
    relative: bool

    @classmethod
    def parse(cls, raw: str | float | int) -> Amount:
        if isinstance(raw, str):
            text = raw.strip()
            if text.endswith("%"):
                try:
                    return cls(value=float(text[:-1]) / 100.0, relative=True)
                except ValueError:
                    pass
                raise ValueError(f"{raw!r} is not a percentage like '5%'")
            try:
                return cls(value=float(text), relative=False)
            except ValueError:
                raise ValueError(
                    f"{raw!r} is neither a percentage like '5%' nor a number"
                ) from None
        return cls(value=float(raw), relative=False)

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


class MetricSpec(BaseModel):
    """How outcomes and predictions become one number per variant (docs/concepts.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=NAME_PATTERN, description="Metric name, e.g. 'conversion'.")
    kind: MetricKind
    role: MetricRole = "secondary"
    direction: Direction | None = None
    margin: str | float | None = Field(default=None, description="Guardrail margin: '5%' or 0.002.")
    winsorize: float | None = Field(default=None, gt=0.5, lt=1.0, description="Upper quantile cap.")
    outcome: str | None = Field(default=None, pattern=NAME_PATTERN, description="proportion, mean")
    numerator: str | None = Field(default=None, pattern=NAME_PATTERN, description="ratio")
    denominator: str | None = Field(default=None, pattern=NAME_PATTERN, description="ratio")
    measure: ClassificationMeasure | None = None
    label: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="classification: outcome holding the true label",
    )
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    statistic: LatencyStatistic | None = None
    window: str | float | None = Field(
        default=None,
        description="proportion, mean: count only outcomes within this long after the unit's "
        "first exposure ('7d'); units whose window has not closed by the cut-off wait",
    )

    covariate: Literal["pre_exposure"] | None = Field(
        default=None,
        description="proportion, mean: adjust for the unit's value of the same outcome before its "
        "first exposure (CUPED)",
    )
    lookback: str | float = Field(
        default="14d", description="covariate: how far before the first exposure to look ('14d')"
    )

    segment_by: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="proportion, mean: break the metric down by this categorical feature of "
        "each unit's first prediction (reported only; never decides)",
    )

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, v: str | float) -> str | float:
        seconds = parse_duration(v)
        if not 3600 <= seconds <= 366 * 86400 or seconds != int(seconds):
            raise ValueError("lookback must be a whole number of seconds between 1h and 366d")
        return v

    @field_validator("window")
    @classmethod
    def _window(cls, v: str | float | None) -> str | float | None:
        if v is not None:
            seconds = parse_duration(v)
            if not 3600 <= seconds <= 366 * 86400:
                raise ValueError("window must be between 1h and 366d, e.g. '7d'")
            if seconds != int(seconds):
                raise ValueError("window must be a whole number of seconds")
        return v

    @field_validator("margin")
    @classmethod
    def _margin(cls, v: str | float | None) -> str | float | None:
        if v is not None:
            amount = Amount.parse(v)
            if amount.value <= 0:
                raise ValueError("margin must be positive: how much worse is acceptable, e.g. '5%'")
        return v

    @model_validator(mode="after")
    def _by_kind(self) -> MetricSpec:
        need: dict[str, tuple[str, ...]] = {
            "proportion": ("outcome",),
            "mean": ("outcome",),
            "ratio": ("numerator", "denominator"),
            "classification": ("measure", "label"),
            "latency": ("statistic",),
            "error_rate": (),
        }
        missing = [f for f in need[self.kind] if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} metric needs {' and '.join(missing)}")
        if self.window is not None and self.kind not in ("proportion", "mean"):
            raise ValueError(
                f"window applies to proportion and mean metrics, not to {self.kind} metrics"
            )
        if self.covariate is not None and self.kind not in ("proportion", "mean"):
            raise ValueError(
                f"covariate applies to proportion and mean metrics, not to {self.kind} metrics"
            )
        if self.covariate is not None and (self.window is not None or self.winsorize is not None):
            raise ValueError(
                "covariate cannot be combined with window or winsorize yet: drop one of them"
            )
        if self.segment_by is not None and self.kind not in ("proportion", "mean"):
            raise ValueError(
                f"segment_by applies to proportion and mean metrics, not to {self.kind} metrics"
            )
        if self.segment_by is not None and self.window is not None:
            raise ValueError("segment_by cannot be combined with window yet: drop one of them")
        if self.window is not None and self.winsorize is not None:
            raise ValueError("window and winsorize cannot be combined yet: drop one of them")
        if self.role == "guardrail" and self.effective_direction is None:
            raise ValueError("a guardrail needs a direction: 'increase' or 'decrease' is good")
        if self.role == "guardrail" and self.margin is None:
            raise ValueError(
                "a guardrail needs a margin, how much worse is acceptable: relative ('10%') or "
                "absolute (0.002); without one it could never be shown non-inferior"
            )
        return self

    @property
    def effective_direction(self) -> Direction | None:
        """The good direction; implied for latency, error rate and log loss."""
        if self.direction is not None:
            return self.direction
        if self.kind in ("latency", "error_rate") or self.measure == "log_loss":
            return "decrease"
        if self.kind == "classification":
            return "increase"
        return None

    @cached_property
    def window_seconds(self) -> int | None:
        """The attribution window in whole seconds, or None."""
        return None if self.window is None else int(parse_duration(self.window))

    @cached_property
    def lookback_seconds(self) -> int | None:
        """The covariate's lookback in whole seconds, or None without a covariate."""
        return None if self.covariate is None else int(parse_duration(self.lookback))

    @cached_property
    def margin_amount(self) -> Amount | None:
        return None if self.margin is None else Amount.parse(self.margin)


class PromoteRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    when: Literal["primary_better"] = "primary_better"
    min_lift: str | float = "0%"

    @field_validator("min_lift")
    @classmethod
    def _lift(cls, v: str | float) -> str | float:
        Amount.parse(v)
        return v


class RollbackRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    on_guardrail_breach: bool = True
    on_primary_worse: bool = True


class RampRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: list[float] = Field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0], min_length=1)
    min_interval: str | float = "30m"

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if any(s <= 0 or s > 100 for s in v):
            raise ValueError("ramp steps are candidate shares in percent, each in (0, 100]")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError("ramp steps must increase, e.g. [5, 25, 50, 100]")
        return v

    @field_validator("min_interval")
    @classmethod
    def _interval(cls, v: str | float) -> str | float:
        parse_duration(v)
        return v

    @cached_property
    def min_interval_seconds(self) -> float:
        return parse_duration(self.min_interval)


class BanditRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    algorithm: Literal["thompson"] = "thompson"
    floor: float = Field(
        default=10.0, ge=0, lt=100, description="Minimum share per variant, percent."
    )
    metric: str | None = Field(default=None, description="Metric key; default the first primary.")


class CleanupRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    retire_losers: bool = True


class Policy(BaseModel):
    """The auto-promotion rules (``docs/policy.md``). Defaults are the safe ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["auto", "recommend", "off"] = "auto"
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    inference: Literal["always_valid", "group_sequential", "fixed"] = "always_valid"
    mde: str | float = "2%"
    max_units_per_variant: int | None = Field(default=None, ge=1)
    min_units_per_variant: int = Field(default=500, ge=0)
    min_events_per_variant: int = Field(default=50, ge=0)
    min_runtime: str | float = "1h"
    promote: PromoteRule = Field(default_factory=PromoteRule)
    rollback: RollbackRule = Field(default_factory=RollbackRule)
    on_srm: Literal["pause", "rollback", "warn"] = "pause"
    on_drift: Literal["pause", "rollback", "warn"] = "warn"
    ramp: RampRule | None = Field(default_factory=RampRule)
    bandit: BanditRule | None = None
    cleanup: CleanupRule = Field(default_factory=CleanupRule)

    @field_validator("mde")
    @classmethod
    def _mde(cls, v: str | float) -> str | float:
        if Amount.parse(v).value <= 0:
            raise ValueError("mde must be positive, e.g. '2%'")
        return v

    @field_validator("min_runtime")
    @classmethod
    def _runtime(cls, v: str | float) -> str | float:
        parse_duration(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.inference in ("group_sequential", "fixed") and self.max_units_per_variant is None:
            raise ValueError(
                f"inference '{self.inference}' needs max_units_per_variant (the planned sample)"
            )
        if self.ramp is not None and self.bandit is not None:
            raise ValueError("use either ramp or bandit, not both")
        return self

    @cached_property
    def mde_amount(self) -> Amount:
        return Amount.parse(self.mde)

    @cached_property
    def min_runtime_seconds(self) -> float:
        return parse_duration(self.min_runtime)

    @cached_property
    def min_lift_amount(self) -> Amount:
        return Amount.parse(self.promote.min_lift)


class ExperimentSpec(BaseModel):
    """One experiment as the engine reads it, parsed once per analysis or decision run from what
    is stored (``ExperimentSpec.parse``) and passed down: no layer re-parses metrics or policy."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    key: str
    control: str
    variants: tuple[str, ...]
    retired: frozenset[str] = frozenset()
    metrics: tuple[MetricSpec, ...]
    policy: Policy

    @property
    def treatments(self) -> list[str]:
        """Every variant but the control, retired ones included (they keep their comparisons)."""
        return [v for v in self.variants if v != self.control]

    @property
    def primaries(self) -> list[MetricSpec]:
        return [m for m in self.metrics if m.role == "primary"]

    @classmethod
    def parse(
        cls,
        *,
        key: str,
        control: str,
        variants: Sequence[str],
        retired: Iterable[str] = (),
        metrics: Sequence[Any],
        policy: Any,
    ) -> ExperimentSpec:
        """Validate the stored metrics and policy; ``SpecProblems`` names every bad field."""
        problems: list[tuple[str, str]] = []
        parsed: list[MetricSpec] = []
        for i, raw in enumerate(metrics or []):
            try:
                parsed.append(
                    raw if isinstance(raw, MetricSpec) else MetricSpec.model_validate(raw)
                )
            except ValidationError as exc:
                problems.append((f"metrics[{i}]", first_error(exc)))
        try:
            typed = policy if isinstance(policy, Policy) else Policy.model_validate(policy or {})
        except ValidationError as exc:
            problems.append(("policy", first_error(exc)))
            typed = Policy()
        if problems:
            raise SpecProblems(key, problems)
        return cls(
            key=key,
            control=control,
            variants=tuple(variants),
            retired=frozenset(retired),
            metrics=tuple(parsed),
            policy=typed,
        )


class SpecProblems(ValueError):
    """A stored experiment whose metrics or policy no longer validate: ``problems`` lists
    ``(field path, message)``; the domain layer turns it into a 422."""

    def __init__(self, key: str, problems: list[tuple[str, str]]) -> None:
        self.key = key
        self.problems = problems
        super().__init__(
            f"Experiment {key!r} cannot be analysed: "
            + "; ".join(f"{field}: {message}" for field, message in problems)
        )


def first_error(exc: ValidationError) -> str:
    """The first validation error as ``loc: message``."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg', '')}" if where else str(err.get("msg", ""))
