"""The whole decision path, simulated: what abstats would *do* to production traffic.

Each simulated experiment runs the code the scheduler runs at every look: per-look sufficient
statistics (per variant and weight epoch) -> :func:`abstats.engine.summarize.summarize` (values,
stratified comparisons with their sequential state, Holm, SRM against each epoch's weights with
the router's switch-over left out, gates, the recommendation) -> :func:`abstats.engine.rules.decide`
-> the action applied to the simulated experiment (a ramp step opens a weight epoch that the
router serves after its lag and confirms; promote, rollback and pause end the run).

Traffic: 2,000 new units an hour for 50 hours (100,000 units; power rows 80 hours), looks equally spaced (100 or
1,000 looks). Metrics: a primary conversion (p = 0.10 unless the row says otherwise) and a
guardrail (a per-unit mean, margin 10%). Default policy (always-valid inference, alpha 0.05,
ramp 5/25/50/100 every 30 min, gates 500 units / 50 events / 1 h) unless the row says otherwise.

Rows (A/A rows: any promote, rollback or pause is a false action):
- ``A/A ramp``: the default ramp.
- ``A/A 5/95``: no ramp, a fixed 95/5 split.
- ``A/A drift``: the baseline drifts 0.09 -> 0.11 over the run (across the ramp's steps).
- ``A/A lag``: the router serves the old weights for 5 minutes after every step, then confirms.
- ``A/A AUC``: the primary is the ROC AUC of a score whose level drifts over time.
- ``A/A fixed``: ``inference: fixed``; the planned sample is reached 40% into the run, so 60% of
  the looks come after the horizon.
- ``A/A 3g x 2c``: three guardrails and two candidates.
- ``power +10%``: the candidate converts 10% more (0.11): the share of runs promoted and the
  median candidate sample at promotion, against the fixed-sample size for 80% power (14,751).
  Once with the default ``mde`` (2%, which tunes the always-valid test to small effects) and
  once with ``mde: 5%``.

Prints one table: the false-action rate (with the upper end of its 95% Wilson interval) by kind.
Fixed seeds. ``make bench`` runs it; ``--runs N`` and ``--looks 100 1000`` set the size.

Usage: ``python tests/perf/simulate_decisions.py [--runs 400] [--looks 100 1000] [--rows ...]``
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from abstats.engine import ramp as ramps
from abstats.engine.rules import ExperimentState, PastDecision, decide
from abstats.engine.snapshot import SnapshotResult
from abstats.engine.specs import ExperimentSpec
from abstats.engine.summarize import (
    Aggregates,
    EpochWeights,
    MetricData,
)
from abstats.engine.summarize import summarize as engine_summarize
from abstats.stats import (
    AUC_CLUSTER_DEGREE,
    BinnedScores,
    MeanStats,
    ProportionStats,
    ScoreClusters,
    required_units_per_arm,
    score_moments,
    wilson_interval,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOURS = 50.0
UNITS_PER_HOUR = 2000.0
BASELINE = 0.10
BINS = 10
# AUC rows: labelled requests per unit, and the spread of a unit's own score level (requests of
# one unit are correlated, as in production: DeLong's variance is clustered by unit)
AUC_REQUESTS_PER_UNIT = 5
AUC_UNIT_EFFECT = 0.5
MOMENTS = 2 * (AUC_CLUSTER_DEGREE + 1)
SETTLE = timedelta(seconds=5)
FIXED_N = 14_751  # per arm, p = 0.10 vs 0.11, alpha 0.05 two-sided, power 0.8 (statsmodels)

PRIMARY = {"key": "conversion", "kind": "proportion", "outcome": "c", "role": "primary",
           "direction": "increase"}  # fmt: skip
AUC_PRIMARY = {"key": "auc", "kind": "classification", "measure": "auc", "label": "y",
               "role": "primary"}  # fmt: skip


def guardrail(key: str) -> dict[str, Any]:
    return {"key": key, "kind": "mean", "outcome": key, "role": "guardrail",
            "direction": "decrease", "margin": "10%"}  # fmt: skip


@dataclass(frozen=True)
class Row:
    name: str
    policy: dict[str, Any] = field(default_factory=dict)
    variants: tuple[str, ...] = ("v1", "v2")
    guardrails: int = 1
    baseline: Callable[[float], float] = lambda hours: BASELINE
    lift: float = 0.0
    lag: timedelta = timedelta(0)
    auc: bool = False
    start_weights: dict[str, float] | None = None
    hours: float = HOURS


ROWS = {
    "aa-ramp": Row("A/A ramp 5/25/50"),
    "aa-split": Row("A/A 5/95 split", {"ramp": None}, start_weights={"v1": 95.0, "v2": 5.0}),
    "aa-drift": Row("A/A baseline 0.09->0.11", baseline=lambda h: 0.09 + 0.02 * h / HOURS),
    "aa-lag": Row("A/A 5-min router lag", lag=timedelta(minutes=5)),
    "aa-auc": Row("A/A AUC, drifting scores", auc=True),
    "aa-fixed": Row(
        "A/A fixed, 60% of looks after horizon",
        {"inference": "fixed", "max_units_per_variant": 20_000, "ramp": None},
    ),
    "aa-3gx2c": Row("A/A 3 guardrails x 2 cand.", variants=("v1", "v2", "v3"), guardrails=3),
    # power rows run longer (at most 80 h, 160,000 units): an open-ended test promotes eventually
    "power": Row("power +10%", lift=0.10, hours=80.0),
    "power-mde5": Row("power +10%, mde 5%", {"mde": "5%"}, lift=0.10, hours=80.0),
}


@dataclass
class Arm:
    """One variant's data within one weight epoch (the sufficient statistics SQL would sum)."""

    units: int = 0
    conversions: int = 0
    guards: list[MeanStats] = field(default_factory=list)
    positives: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))
    negatives: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))
    # AUC: units with labelled requests and the Gram sums of their score moments
    scored_units: int = 0
    gram: np.ndarray = field(default_factory=lambda: np.zeros((MOMENTS, MOMENTS)))


_SCORE_EDGES = np.linspace(-1.5, 3.0, BINS + 1)[1:-1]  # inner edges; the outer bins are open


def add_scores(arm: Arm, rng: np.random.Generator, units: int, *, level: float) -> None:
    """``units`` new units with labelled requests: a unit's scores share its own level, and the
    level of every score drifts with ``level`` (an A/A: no variant differs)."""
    if units == 0:
        return
    shape = (units, AUC_REQUESTS_PER_UNIT)
    label = rng.random(shape) < 0.3
    score = (
        level
        + rng.normal(0.0, AUC_UNIT_EFFECT, (units, 1))
        + label * 1.0
        + rng.normal(0.0, 1.0, shape)
    )
    bins = np.searchsorted(_SCORE_EDGES, score)
    one_hot = bins[:, :, None] == np.arange(BINS)  # (units, requests, bins)
    positives = (one_hot & label[:, :, None]).sum(axis=1)
    negatives = (one_hot & ~label[:, :, None]).sum(axis=1)
    arm.positives += positives.sum(axis=0)
    arm.negatives += negatives.sum(axis=0)
    z = score_moments(positives, negatives).astype(float)
    arm.gram += z.T @ z
    arm.scored_units += units


def simulate(
    row: Row,
    looks: int,
    seed: int,
    on_decision: Callable[[SnapshotResult, Any], None] | None = None,
) -> tuple[str, int, int]:
    """One experiment: (outcome, look of the outcome, candidate units at the outcome).
    ``on_decision(snapshot, action)`` sees every look's snapshot and action."""
    rng = np.random.default_rng(seed)
    metrics = [AUC_PRIMARY if row.auc else PRIMARY] + [
        guardrail(f"g{i}") for i in range(row.guardrails)
    ]
    policy = {**row.policy}
    spec = ExperimentSpec.parse(
        key="sim", control="v1", variants=list(row.variants), metrics=metrics, policy=policy
    )
    candidates = [v for v in row.variants if v != "v1"]
    if row.start_weights is not None:
        weights = dict(row.start_weights)
    elif spec.policy.ramp is not None:
        weights = ramps.weights_for_step(ramps.ramp_steps(spec.policy.ramp)[0], "v1", candidates)
    else:
        weights = {v: 100.0 / len(row.variants) for v in row.variants}
    epochs = [EpochWeights(0, T0, dict(weights))]
    confirmed: dict[int, datetime] = {0: T0}
    served_before = dict(weights)  # what the router serves until it confirms the new epoch
    cells: dict[tuple[str, int], Arm] = {}
    first_seen: datetime | None = None
    previous: dict[str, Any] = {}
    history: tuple[Any, ...] = ()
    step = timedelta(hours=row.hours / looks)
    per_look = UNITS_PER_HOUR * row.hours / looks
    settling: dict[str, dict[str, int]] = {}
    for look in range(1, looks + 1):
        start, end = T0 + (look - 1) * step, T0 + look * step
        epoch = epochs[-1]
        switch = confirmed.get(epoch.epoch, epoch.started_at)
        # arrivals of this look: before the router switched (old weights) and after
        n = int(rng.poisson(per_look))
        times = np.sort(rng.random(n)) * (end - start).total_seconds()
        if first_seen is None and n:
            first_seen = start + timedelta(seconds=float(times[0]))
        hours = ((start - T0).total_seconds() + (end - start).total_seconds() / 2) / 3600
        base = row.baseline(hours)
        old_until = max((switch - start).total_seconds(), 0.0)
        settle_until = max((switch + SETTLE - start).total_seconds(), 0.0)
        cut = np.searchsorted(times, [old_until, settle_until])
        segments = [  # (units, weights served, counted as settling)
            (int(cut[0]), served_before, epoch.epoch > 0),
            (int(cut[1] - cut[0]), epoch.weights, epoch.epoch > 0),
            (int(n - cut[1]), epoch.weights, False),
        ]
        for count, shares, is_settling in segments:
            if count == 0:
                continue
            names = list(shares)
            p = np.array([shares[v] for v in names], dtype=float)
            split = rng.multinomial(count, p / p.sum())
            for variant, k in zip(names, split, strict=True):
                if k == 0:
                    continue
                arm = cells.setdefault((variant, epoch.epoch), Arm())
                arm.units += int(k)
                if is_settling:
                    bucket = settling.setdefault(str(epoch.epoch), {})
                    bucket[variant] = bucket.get(variant, 0) + int(k)
                if row.auc:
                    add_scores(arm, rng, int(k), level=0.8 * hours / row.hours)
                else:
                    rate = base * (1 + row.lift) if variant != "v1" else base
                    arm.conversions += int(rng.binomial(k, rate))
        # guardrail values: per-unit means, added in bulk per cell (sum and sum of squares)
        data_metrics: dict[str, MetricData] = {}
        primary_arms: dict[str, dict[int, Any]] = {}
        events: dict[str, int] = {}
        for (variant, e), arm in cells.items():
            if row.auc:
                # per (variant, epoch) with the units' score moments, as
                # abstats.analysis.aggregate.auc_cells reads them
                primary_arms.setdefault(variant, {})[e] = BinnedScores(
                    positives=tuple(int(x) for x in arm.positives),
                    negatives=tuple(int(x) for x in arm.negatives),
                    clusters=ScoreClusters.from_gram(arm.scored_units, arm.gram),
                )
                events[variant] = events.get(variant, 0) + int(
                    arm.positives.sum() + arm.negatives.sum()
                )
                continue
            primary_arms.setdefault(variant, {})[e] = ProportionStats(arm.units, arm.conversions)
            events[variant] = events.get(variant, 0) + arm.conversions
        data_metrics[metrics[0]["key"]] = MetricData(primary_arms, events)
        for g in range(row.guardrails):
            arms_g: dict[str, dict[int, Any]] = {}
            for (variant, e), arm in cells.items():
                while len(arm.guards) <= g:
                    arm.guards.append(MeanStats(0, 0.0, 0.0))
                have = arm.guards[g].n
                new = arm.units - have
                if new > 0:
                    values = rng.normal(20.0, 5.0, new)
                    arm.guards[g] = arm.guards[g] + MeanStats(
                        new, float(values.sum()), float((values * values).sum())
                    )
                arms_g.setdefault(variant, {})[e] = arm.guards[g]
            data_metrics[f"g{g}"] = MetricData(arms_g, {v: 0 for v in row.variants})
        units = {v: sum(a.units for (vv, _), a in cells.items() if vv == v) for v in row.variants}
        by_epoch: dict[str, dict[str, int]] = {}
        for (variant, e), arm in cells.items():
            by_epoch.setdefault(str(e), {})[variant] = arm.units
        data = Aggregates(
            cutoff=end,
            epochs=list(epochs),
            units=units,
            units_by_epoch=by_epoch,
            mixed_units=0,
            first_seen=first_seen,
            metrics=data_metrics,
            previous_state=previous,
            settling=settling,
        )
        state = ExperimentState(
            status="running",
            control="v1",
            variants=row.variants,
            weights=dict(epoch.weights),
            weight_epoch=epoch.epoch,
            epoch_started_at=epoch.started_at,
            history=history,
            epoch_confirmed_at=confirmed.get(epoch.epoch),
            epoch_pending=epoch.epoch not in confirmed,
        )
        snapshot: SnapshotResult = engine_summarize(spec, data, state)
        previous = dict(snapshot.sequential_state)
        action = decide(snapshot, spec.policy, state, now=end)
        if on_decision is not None:
            on_decision(snapshot, action)
        if action.kind in ("promote", "rollback", "pause"):
            candidate_units = max(units.get(v, 0) for v in candidates)
            if action.kind == "promote":
                return "promote", look, candidate_units
            if action.kind == "pause" and "SRM" in action.reason:
                return "srm_pause", look, candidate_units
            return action.kind, look, candidate_units
        if action.kind in ("advance_ramp", "reweight") and action.new_weights is not None:
            served_before = dict(epoch.weights)
            new = EpochWeights(epoch.epoch + 1, end, dict(action.new_weights))
            epochs.append(new)
            confirmed[new.epoch] = end + row.lag
        if action.record:
            past = PastDecision(
                action.kind, "policy", True, None, "running", action.new_weights, end
            )
            history = (past, *history)[:20]
    return "none", looks, max(units.get(v, 0) for v in candidates)


def _run(args: tuple[str, int, int]) -> tuple[str, int, int]:
    key, looks, seed = args
    return simulate(ROWS[key], looks, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=400, help="experiments per row and look count")
    parser.add_argument("--looks", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args()
    print(
        f"whole decision path (summarize -> decide), {args.runs} experiments per cell, "
        f"{UNITS_PER_HOUR:,.0f} units/h for {HOURS:g} h (power rows 80 h); fixed-sample n for 80% power at +10%: "
        f"{FIXED_N:,} per arm (check: {required_units_per_arm(BASELINE, 0.10):,})"
    )
    header = (
        f"{'row':<38} {'looks':>5} {'promote':>8} {'rollback':>8} {'SRM pause':>9} "
        f"{'pause':>6} {'false':>6} {'95% up':>7} {'median n':>9} {'n/fixed':>7} {'s':>5}"
    )
    print(header)
    print("-" * len(header))
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for key in args.rows:
            for looks in args.looks:
                started = time.perf_counter()
                seeds = [(key, looks, args.seed + 7919 * i + looks) for i in range(args.runs)]
                results = list(pool.map(_run, seeds, chunksize=max(1, args.runs // 16)))
                kinds = Counter(r[0] for r in results)
                n = len(results)
                false = sum(kinds[k] for k in ("promote", "rollback", "srm_pause", "pause"))
                promoted = [r[2] for r in results if r[0] == "promote"]
                median = float(np.median(promoted)) if promoted else math.nan
                if key.startswith("power"):
                    rate, upper = kinds["promote"] / n, wilson_interval(kinds["promote"], n)[0]
                    rate_text = f"{rate:6.3f} {upper:7.3f}"  # power: the lower end instead
                else:
                    upper = wilson_interval(false, n)[1]
                    rate_text = f"{false / n:6.3f} {upper:7.3f}"
                print(
                    f"{ROWS[key].name:<38} {looks:>5} {kinds['promote'] / n:8.3f} "
                    f"{kinds['rollback'] / n:8.3f} {kinds['srm_pause'] / n:9.3f} "
                    f"{kinds['pause'] / n:6.3f} {rate_text} "
                    f"{median:9,.0f} {median / FIXED_N:7.2f} {time.perf_counter() - started:5.0f}",
                    flush=True,
                )
    print(
        "false: promote + rollback + pause rates of the A/A rows, with the upper end of the 95% "
        "Wilson interval; for 'power' the promotion rate with the lower end of its interval. "
        f"n/fixed: median candidate units at promotion / {FIXED_N:,}."
    )


if __name__ == "__main__":
    main()
