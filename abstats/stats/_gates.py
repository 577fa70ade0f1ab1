"""Minimum-sample gates: no decision before every gate is met (docs/statistics.md)."""

from __future__ import annotations

from collections.abc import Mapping

from abstats.stats._results import GateResult


def minimum_sample_gate(
    *,
    units: Mapping[str, int],
    min_units: int,
    events: Mapping[str, int] | None = None,
    min_events: int = 0,
    runtime_seconds: float | None = None,
    min_runtime_seconds: float = 0.0,
) -> GateResult:
    """Check the policy's gates: units per variant, primary-metric events per variant, runtime.

    Parameters
    ----------
    units : mapping
        Units per variant.
    min_units : int
        ``min_units_per_variant``.
    events : mapping or None
        Primary-metric events per variant (units with the outcome, requests...).
    min_events : int
        ``min_events_per_variant``.
    runtime_seconds, min_runtime_seconds : float
        Time since the experiment started, and ``min_runtime``.

    Returns
    -------
    GateResult
        ``shortfalls`` says how much each unmet gate still needs.
    """
    shortfalls: dict[str, float] = {}
    if not units:
        shortfalls["units"] = float(min_units)
    for variant, count in units.items():
        if count < min_units:
            shortfalls[f"units:{variant}"] = float(min_units - count)
    if min_events > 0:
        for variant in units:
            count = (events or {}).get(variant, 0)
            if count < min_events:
                shortfalls[f"events:{variant}"] = float(min_events - count)
    if min_runtime_seconds > 0:
        elapsed = runtime_seconds or 0.0
        if elapsed < min_runtime_seconds:
            shortfalls["runtime"] = min_runtime_seconds - elapsed
    if not shortfalls:
        return GateResult(True, "ok", "", {})
    message = "not enough data yet: " + ", ".join(
        f"{gate} needs {missing:g} more" + (" s" if gate == "runtime" else "")
        for gate, missing in shortfalls.items()
    )
    return GateResult(False, "not_enough_data", message, shortfalls)
