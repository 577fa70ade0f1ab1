"""Builders of analysis snapshots for the decision-table tests (plain SnapshotResult values)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from abstats.engine.rules import ExperimentState, PastDecision
from abstats.engine.snapshot import (
    Comparison,
    DriftCheck,
    Gates,
    MetricResult,
    SnapshotResult,
    SrmResult,
    VariantValue,
)

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def comparison(
    variant: str = "v2",
    *,
    effect: float = 0.0,
    lo: float = -0.01,
    hi: float = 0.01,
    p: float = 0.5,
    better: bool = False,
    worse: bool = False,
    non_inferior: bool | None = None,
    margin: str | None = None,
    status: str = "ok",
) -> Comparison:
    return Comparison(
        variant=variant,
        status=status,  # type: ignore[arg-type]
        absolute_effect=effect * 0.1,
        relative_effect=effect,
        ci_lower=lo,
        ci_upper=hi,
        p_value=p,
        p_value_adjusted=p,
        significant=better or worse,
        better=better,
        worse=worse,
        non_inferior=non_inferior,
        margin=margin,
    )


def primary(
    *comps: Comparison, key: str = "conversion", direction: str = "increase"
) -> MetricResult:
    variants = {"v1": VariantValue(units=5000, events=500, value=0.1, ci_lower=0.09, ci_upper=0.11)}
    for c in comps:
        variants[c.variant] = VariantValue(
            units=5000, events=520, value=0.104, ci_lower=0.095, ci_upper=0.113
        )
    return MetricResult(
        metric=key,
        kind="proportion",
        role="primary",
        direction=direction,  # type: ignore[arg-type]
        variants=variants,
        comparisons=list(comps),
    )


def guardrail(*comps: Comparison, key: str = "latency_p95") -> MetricResult:
    return MetricResult(
        metric=key,
        kind="latency",
        role="guardrail",
        direction="decrease",
        variants={"v1": VariantValue(units=5000, events=50000, value=20.0)},
        comparisons=list(comps),
    )


def good_guardrail(variant: str = "v2") -> MetricResult:
    return guardrail(
        comparison(variant, effect=0.01, lo=-0.02, hi=0.04, p=0.6, non_inferior=True, margin="10%")
    )


def snapshot(
    metrics: list[MetricResult],
    *,
    units: dict[str, int] | None = None,
    gates_met: bool = True,
    srm_flagged: bool = False,
    drift: list[DriftCheck] | None = None,
    cutoff: datetime | None = None,
    weight_epoch: int = 1,
    weights: dict[str, float] | None = None,
    inference: str = "always_valid",
) -> SnapshotResult:
    units = units if units is not None else {"v1": 5000, "v2": 5000}
    return SnapshotResult(
        experiment="churn",
        cutoff=cutoff or T0 + timedelta(hours=2),
        weight_epoch=weight_epoch,
        weights=weights or {"v1": 50.0, "v2": 50.0},
        inference=inference,
        alpha=0.05,
        units=units,
        gates=Gates(
            min_units_met=gates_met,
            min_events_met=gates_met,
            min_runtime_met=gates_met,
            units_per_variant=units,
            primary_events_per_variant={k: v // 10 for k, v in units.items()},
            runtime_seconds=7200.0 if gates_met else 600.0,
        ),
        metrics=metrics,
        srm=SrmResult(
            observed=units,
            expected={k: float(v) for k, v in units.items()},
            p_value=1e-6 if srm_flagged else 0.6,
            threshold=0.001,
            flagged=srm_flagged,
            method="chi2",
        ),
        drift=drift or [],
    )


def drift_check(flagged: bool = True) -> DriftCheck:
    return DriftCheck(
        variant="v2",
        target="score",
        reference="control",
        psi=0.31,
        js_distance=0.2,
        p_value=1e-5,
        p_value_adjusted=1e-4,
        level="alert" if flagged else "ok",
        flagged=flagged,
    )


def state(
    *,
    weights: dict[str, float] | None = None,
    status: str = "running",
    epoch: int = 1,
    epoch_started_at: datetime | None = None,
    variants: tuple[str, ...] = ("v1", "v2"),
    history: tuple[PastDecision, ...] = (),
    retired: frozenset[str] = frozenset(),
) -> ExperimentState:
    return ExperimentState(
        status=status,
        control="v1",
        variants=variants,
        weights=weights or {"v1": 50.0, "v2": 50.0},
        weight_epoch=epoch,
        epoch_started_at=epoch_started_at or T0,
        retired=retired,
        history=history,
    )


def past(
    action: str, *, applied: bool = True, weights_after: dict[str, Any] | None = None
) -> PastDecision:
    return PastDecision(
        action=action,
        actor="policy",
        applied=applied,
        snapshot_id=1,
        status_after="running",
        weights_after=weights_after,
        created_at=T0,
    )
