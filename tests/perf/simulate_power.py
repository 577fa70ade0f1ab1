"""Issue 17, measured: covariate adjustment (CUPED), attribution windows and the planner.

Rows (fixed seeds; ``make bench`` runs this file):

- ``cuped width``: interval width adjusted / raw at rho = 0.7 (fixed design, 2,000 units per arm;
  theory sqrt(1 - 0.49) = 0.714).
- ``cuped A/A``: always-valid false-positive rate over 100 looks and two weight epochs (a 90/10
  epoch, then 50/50), theta re-estimated at every look; the same for a group-sequential design
  (20 looks up to its horizon).
- ``cuped +5%``: median units per arm at the first look that finds the candidate better, raw and
  adjusted (always valid, looks every 20 units per arm), and the drop.
- ``window A/A``: a 5/25/50 ramp (a day each, cut-off at day 4), labels delayed by an exponential
  with mean 2 days: the false-positive rate counting every outcome seen by the cut-off and counting
  within a 1-day window over units whose window has closed, pooled and stratified by epoch (CMH).
- ``segments A/A``: five segments with different base rates, no effect anywhere, two epochs:
  how often Cochran's Q rejects and how often any segment is significant after BH.
- ``plan``: the planner's power at its planned sample against a simulation of the design
  (always valid through :func:`abstats.stats.compare`, group sequential against its boundaries).

Usage: ``python tests/perf/simulate_power.py [--runs 200]``
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from abstats.engine.plan import PlanRequest, plan
from abstats.engine.segments import breakdown
from abstats.stats import (
    CovariateStats,
    InferenceDesign,
    ProportionStats,
    SequentialState,
    compare,
    compare_stratified,
    cuped,
    spending_boundaries,
)

RHO = 0.7


def _units(rng: np.random.Generator, n: int, lift: float = 0.0) -> CovariateStats:
    x = rng.normal(10.0, 2.0, n)
    y = 10.0 * (1 + lift) + RHO * (x - 10.0) + math.sqrt(1 - RHO**2) * rng.normal(0.0, 2.0, n)
    return CovariateStats(
        n,
        float(y.sum()),
        float((y * y).sum()),
        float(x.sum()),
        float((x * x).sum()),
        float((x * y).sum()),
    )


def cuped_width(runs: int) -> float:
    rng = np.random.default_rng(171)
    design = InferenceDesign(method="fixed", alpha=0.05, max_units_per_variant=2)
    ratios = []
    for _ in range(runs):
        c, t = _units(rng, 2000), _units(rng, 2000)
        raw = compare(c.outcome, t.outcome, design=design, relative=False)
        ((ac, at),) = cuped([(c, t)]).strata
        adjusted = compare(ac, at, design=design, relative=False)
        ratios.append((adjusted.ci_upper - adjusted.ci_lower) / (raw.ci_upper - raw.ci_lower))
    return float(np.mean(ratios))


def cuped_a_a(runs: int, method: str = "always_valid", looks: int = 100) -> float:
    rng = np.random.default_rng(172)
    design = InferenceDesign(
        method=method,  # type: ignore[arg-type]
        alpha=0.05,
        mde_relative=0.02,
        max_units_per_variant=None if method == "always_valid" else 80 * looks // 2,
    )
    rejected = 0
    for _ in range(runs):
        cells = [[CovariateStats(), CovariateStats()], [CovariateStats(), CovariateStats()]]
        state: SequentialState | None = None
        for look in range(looks):
            epoch = 0 if look < 3 * looks // 10 else 1
            shares = (0.9, 0.1) if epoch == 0 else (0.5, 0.5)
            for arm in (0, 1):
                cells[epoch][arm] = cells[epoch][arm] + _units(rng, max(int(80 * shares[arm]), 1))
            strata = [(c, t) for c, t in cells if c.n and t.n]
            result = compare_stratified(
                cuped(strata).strata, design=design, previous=state, weighting="cmh"
            )
            state = result.state
            if result.significant:
                rejected += 1
                break
    return rejected / runs


def cuped_units_to_promotion(runs: int) -> tuple[float, float]:
    rng = np.random.default_rng(173)
    design = InferenceDesign(method="always_valid", alpha=0.05, mde_relative=0.05)
    found: dict[str, list[int]] = {"raw": [], "adjusted": []}
    batch, looks = 20, 300
    for _ in range(runs):
        c, t = CovariateStats(), CovariateStats()
        states: dict[str, SequentialState | None] = {"raw": None, "adjusted": None}
        done: dict[str, int] = {}
        for look in range(looks):
            c, t = c + _units(rng, batch), t + _units(rng, batch, 0.05)
            arms = {"raw": (c.outcome, t.outcome), "adjusted": cuped([(c, t)]).strata[0]}
            for name, (ac, at) in arms.items():
                if name in done:
                    continue
                result = compare(ac, at, design=design, previous=states[name])
                states[name] = result.state
                if result.significant and result.ci_lower > 0:
                    done[name] = (look + 1) * batch
            if len(done) == 2:
                break
        for name in found:
            found[name].append(done.get(name, looks * batch))
    return float(np.median(found["raw"])), float(np.median(found["adjusted"]))


def window_a_a(runs: int) -> dict[str, float]:
    rng = np.random.default_rng(174)
    design = InferenceDesign(
        method="fixed", alpha=0.05, max_units_per_variant=2, min_units_per_variant=2
    )
    steps, cutoff, window = (0.05, 0.25, 0.5, 0.5), 4.0, 1.0
    hits = {"pooled_all": 0, "pooled_window": 0, "strata_all": 0, "strata_window": 0}
    for _ in range(runs):
        strata: dict[str, list[tuple[ProportionStats, ProportionStats]]] = {"all": [], "window": []}
        for day, share in enumerate(steps):
            arms: dict[str, list[ProportionStats]] = {"all": [], "window": []}
            for arm_share in (1 - share, share):
                n = int(rng.binomial(4000, arm_share))
                exposed = day + rng.uniform(0, 1, n)
                converts = rng.random(n) < 0.1
                delay = rng.exponential(2.0, n)
                closed = exposed + window <= cutoff
                arms["all"].append(
                    ProportionStats(n, int((converts & (exposed + delay <= cutoff)).sum()))
                )
                arms["window"].append(
                    ProportionStats(
                        int(closed.sum()), int((converts & (delay < window) & closed).sum())
                    )
                )
            for name in ("all", "window"):
                if arms[name][0].n and arms[name][1].n:
                    strata[name].append((arms[name][0], arms[name][1]))
        for name, pairs in strata.items():
            control = sum((p[0] for p in pairs), ProportionStats.empty())
            treatment = sum((p[1] for p in pairs), ProportionStats.empty())
            hits[f"pooled_{name}"] += compare(control, treatment, design=design).significant
            stratified = compare_stratified(pairs, design=design, weighting="cmh")
            hits[f"strata_{name}"] += stratified.significant
    return {k: v / runs for k, v in hits.items()}


def segments_a_a(runs: int) -> tuple[float, float]:
    rng = np.random.default_rng(176)
    q_rejected = any_significant = 0
    for _ in range(runs):
        segments = {}
        for segment, rate in zip("abcde", (0.05, 0.1, 0.1, 0.2, 0.3), strict=True):
            arms: dict[str, dict[int, ProportionStats]] = {"c": {}, "t": {}}
            for epoch, share in ((0, 0.1), (1, 0.5)):
                for arm, part in (("c", 1 - share), ("t", share)):
                    n = int(2000 * part)
                    arms[arm][epoch] = ProportionStats(n, int(rng.binomial(n, rate)))
            segments[segment] = arms
        result = breakdown("f", segments, "c", "t", 0.05)
        q_rejected += (result.heterogeneity_p_value or 1.0) <= 0.05
        any_significant += any(s.significant for s in result.segments)
    return q_rejected / runs, any_significant / runs


def plan_vs_simulation(runs: int) -> dict[str, tuple[int, float, float]]:
    rng = np.random.default_rng(175)
    out: dict[str, tuple[int, float, float]] = {}
    for method, looks in (("always_valid", 10), ("group_sequential", 20)):
        planned = plan(
            PlanRequest(
                kind="proportion",
                baseline=0.2,
                mde="10%",
                traffic_per_day=20_000,
                inference=method,  # type: ignore[arg-type]
                looks=looks,
            )
        )
        n = planned.units_per_variant
        edges = np.array([round(n * (k + 1) / looks) for k in range(looks)])
        sizes = np.diff(np.r_[0, edges])
        sims = runs if method == "always_valid" else 20 * runs
        c = rng.binomial(sizes, 0.2, size=(sims, looks)).cumsum(axis=1)
        t = rng.binomial(sizes, 0.22, size=(sims, looks)).cumsum(axis=1)
        if method == "group_sequential":
            pc, pt = c / edges, t / edges
            z = np.log(pt / pc) / np.sqrt((1 - pt) / (pt * edges) + (1 - pc) / (pc * edges))
            bounds = np.array(spending_boundaries(list(edges / n), 0.05))
            power = float((np.abs(z) >= bounds).any(axis=1).mean())
        else:
            design = InferenceDesign(
                method="always_valid", alpha=0.05, mde_relative=0.1, max_units_per_variant=n
            )
            hits = 0
            for i in range(sims):
                state: SequentialState | None = None
                for k in range(looks):
                    result = compare(
                        ProportionStats(int(edges[k]), int(c[i, k])),
                        ProportionStats(int(edges[k]), int(t[i, k])),
                        design=design,
                        previous=state,
                    )
                    state = result.state
                    if result.significant:
                        hits += 1
                        break
            power = hits / sims
        out[method] = (n, planned.power, power)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    runs = parser.parse_args().runs
    started = time.perf_counter()
    width = cuped_width(max(runs // 10, 10))
    print(f"cuped width     adjusted/raw interval width {width:.3f} (theory 0.714, bar <= 0.75)")
    aa = cuped_a_a(runs)
    print(f"cuped A/A       false-positive rate at 100 looks {aa:.3f} (bar <= 0.05)")
    gs = cuped_a_a(max(runs // 2, 50), "group_sequential", 20)
    print(f"cuped A/A g-s   group-sequential false-positive rate at 20 looks {gs:.3f}")
    raw, adjusted = cuped_units_to_promotion(runs)
    print(
        f"cuped +5%       median units per arm to promotion: raw {raw:,.0f}, adjusted "
        f"{adjusted:,.0f} ({1 - adjusted / raw:.0%} fewer; bar >= 40%)"
    )
    rates = window_a_a(runs)
    print(
        "window A/A      false-positive rate, every outcome: pooled "
        f"{rates['pooled_all']:.3f}, by epoch {rates['strata_all']:.3f}; within 1d: pooled "
        f"{rates['pooled_window']:.3f}, by epoch {rates['strata_window']:.3f}"
    )
    q_rate, bh_rate = segments_a_a(2 * runs)
    print(
        f"segments A/A    Cochran's Q false-positive rate {q_rate:.3f}; any segment significant "
        f"after BH {bh_rate:.3f} (bar <= 0.05 each)"
    )
    for method, (n, promised, simulated) in plan_vs_simulation(runs).items():
        print(
            f"plan {method:<16} {n:,} units per arm: planned power {promised:.3f}, simulated "
            f"{simulated:.3f} ({abs(simulated / promised - 1):.1%} apart; bar <= 10%)"
        )
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
