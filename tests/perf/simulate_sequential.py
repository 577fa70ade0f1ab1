"""Monte-Carlo check of abstats' decision paths under continuous monitoring.

Prints, for an A/A binary metric (p = 0.1, up to 20,000 units per arm, 20 / 100 / 1,000 equally
spaced looks), the false-positive rate of a naive repeated z-test, of ``always_valid`` and of
``group_sequential`` (with Monte-Carlo standard errors), their power at a +10 % relative lift
against the fixed-horizon test at the same maximum sample, an A/A under a ramp (treatment weight
5 -> 25 -> 50 % while the baseline drifts by +-10 %) for the stratified estimator, and the
sample-ratio-mismatch false-alarm rate over 1,000 checks with its detection of a 49/51 split.

The decisions are vectorised mirrors of :func:`abstats.stats.compare` (same estimators, mixing
variance, boundaries, gates and look thinning); a mirror check replays some simulated experiments
through ``compare`` itself and requires identical decisions.

Usage: ``python tests/perf/simulate_sequential.py [--quick] [--seed N]``
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import special, stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from abstats.stats import (
    EpochCounts,
    InferenceDesign,
    ProportionStats,
    SequentialState,
    compare,
    compare_stratified,
    crossing_probability,
    horizon_log_threshold,
    optimal_mixing_ratio,
    spending_boundaries,
    srm_check_epochs,
)

Array = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

ALPHA = 0.05
BASELINE = 0.10
LIFT = 0.10
N_MAX = 20_000
MIN_UNITS = 500  # policy defaults: min_units_per_variant, min_events_per_variant
MIN_EVENTS = 50
MIN_INCREMENT = 0.01  # InferenceDesign.min_information_increment
MDE = 0.10  # "mde" of the always_valid design without max_units_per_variant (= the lift tested)
MARGIN = 0.05  # relative non-inferiority margin of the guardrail scenario


@dataclass
class Paths:
    """Cumulative units and successes per arm at each look: arrays of shape (sims, looks)."""

    n_c: Array
    n_t: Array
    x_c: Array
    x_t: Array


def simulate(
    rng: np.random.Generator,
    sims: int,
    looks: int,
    p_c: float,
    p_t: float,
    n_c_max: int = N_MAX,
    n_t_max: int = N_MAX,
) -> Paths:
    grid = np.arange(1, looks + 1) / looks
    n_c = np.floor(grid * n_c_max + 1e-9)
    n_t = np.floor(grid * n_t_max + 1e-9)
    step_c = np.diff(np.concatenate(([0.0], n_c))).astype(np.int64)
    step_t = np.diff(np.concatenate(([0.0], n_t))).astype(np.int64)
    x_c = np.cumsum(rng.binomial(step_c, p_c, size=(sims, looks)), axis=1).astype(float)
    x_t = np.cumsum(rng.binomial(step_t, p_t, size=(sims, looks)), axis=1).astype(float)
    shape = (sims, looks)
    return Paths(
        np.broadcast_to(n_c, shape).astype(float),
        np.broadcast_to(n_t, shape).astype(float),
        x_c,
        x_t,
    )


# ---------------------------------------------------------------- mirrors of abstats.stats.compare


def ac_variance(x: Array, n: Array) -> Array:
    """Agresti-Caffo variance of a proportion (``_compare._agresti_caffo_variance``)."""
    p = (x + 1) / (n + 2)
    return np.asarray(p * (1 - p) / (n + 2))


def effect(p_c: Array, p_t: Array, v_c: Array, v_t: Array, relative: bool) -> tuple[Array, Array]:
    """Effect and variance on the scale ``compare`` tests: ``t - c``, or ``log(t / c)`` when
    both are positive (else the lift ``t / c - 1`` by the delta method; none at ``c = 0``)."""
    if not relative:
        return p_t - p_c, v_t + v_c
    with np.errstate(divide="ignore", invalid="ignore"):
        log_est = np.log(p_t / p_c)
        log_var = v_t / p_t**2 + v_c / p_c**2
        lift = p_t / p_c - 1
        lift_var = v_t / p_c**2 + p_t**2 * v_c / p_c**4
    use_log = (p_t > 0) & (p_c > 0)
    est = np.where(use_log, log_est, np.where(p_c > 0, lift, 0.0))
    var = np.where(use_log, log_var, np.where(p_c > 0, lift_var, np.inf))
    return est, var


def gates(paths: Paths) -> BoolArray:
    return np.asarray(
        (paths.n_c >= MIN_UNITS)
        & (paths.n_t >= MIN_UNITS)
        & (paths.x_c >= MIN_EVENTS)
        & (paths.x_t >= MIN_EVENTS)
    )


def information(n_c: Array, n_t: Array) -> Array:
    return np.asarray(2.0 / (N_MAX * (1.0 / n_c + 1.0 / n_t)))


def always_valid_reject(est: Array, var: Array, info: Array, alpha: float = ALPHA) -> BoolArray:
    """Two-sided normal-mixture test with tau^2 = r V_N and the threshold calibrated to the
    horizon (``_always_valid.horizon_test``); no new rejection after the first look at s >= 1."""
    r = optimal_mixing_ratio(alpha)
    log_kappa = horizon_log_threshold(alpha, ratio=r, two_sided=True)
    s = np.minimum(info, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z2 = est**2 / var
    log_lr = -0.5 * np.log1p(r * s) + z2 * r * s / (2 * (1 + r * s))
    past = np.cumsum(info >= 1.0, axis=-1) > 1  # looks after the one at the horizon
    return np.asarray((np.nan_to_num(log_lr, nan=-np.inf) >= log_kappa) & ~past)


def plain_mixture_reject(
    est: Array, var: Array, tau2: Array | float, alpha: float = ALPHA
) -> BoolArray:
    """Two-sided mixture SPRT at Ville's threshold (``always_valid_p_value``): the path without
    a planned horizon, tau^2 tuned from the MDE."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lr = 0.5 * np.log(var / (var + tau2)) + est**2 * tau2 / (2 * var * (var + tau2))
    return np.asarray(np.nan_to_num(log_lr, nan=-np.inf) >= math.log(1 / alpha))


def mde_mixing_variance(mde: Array | float, alpha: float = ALPHA) -> Array | float:
    r = optimal_mixing_ratio(alpha)
    return r / (1 + r) * np.square(mde)  # tuned_mixing_variance(mde=...)


def thinned_looks(fractions: Array, first: int) -> list[int]:
    """Indices of the looks ``compare`` takes (``min_information_increment``)."""
    taken = [first]
    for k in range(first + 1, fractions.size):
        last = fractions[taken[-1]]
        if fractions[k] - last >= MIN_INCREMENT or fractions[k] >= 1.0 > last:
            taken.append(k)
    return taken


def group_sequential_reject(est: Array, var: Array, gate: BoolArray, info: Array) -> BoolArray:
    """Reject if |z| crosses the O'Brien-Fleming-type Lan-DeMets boundary at a taken look."""
    sims, _ = est.shape
    rejected = np.zeros(sims, dtype=bool)
    first_look = np.where(gate.any(axis=1), gate.argmax(axis=1), -1)
    z = np.abs(est) / np.sqrt(var)
    for first in np.unique(first_look[first_look >= 0]):
        rows = first_look == first
        fractions = info[np.argmax(rows)]
        taken = [k for k in thinned_looks(fractions, int(first)) if fractions[k] >= MIN_INCREMENT]
        if not taken:
            continue
        bounds = np.asarray(spending_boundaries(tuple(fractions[taken]), ALPHA, "obrien_fleming"))
        rejected[rows] = (z[np.ix_(rows, taken)] >= bounds).any(axis=1)
    return rejected


def wilson(x: Array, n: Array, z: float) -> tuple[Array, Array]:
    p = x / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return np.maximum(centre - half, 0), np.minimum(centre + half, 1)


def fixed_reject(paths: Paths, relative: bool) -> BoolArray:
    """Fixed horizon at the last look: Newcombe (absolute) or delta-method z (relative)."""
    x_c, n_c, x_t, n_t = (a[:, -1] for a in (paths.x_c, paths.n_c, paths.x_t, paths.n_t))
    if relative:
        est, var = effect(x_c / n_c, x_t / n_t, ac_variance(x_c, n_c), ac_variance(x_t, n_t), True)
        return np.asarray(np.abs(est) / np.sqrt(var) >= stats.norm.isf(ALPHA / 2))
    z = float(stats.norm.isf(ALPHA / 2))
    lt, ut = wilson(x_t, n_t, z)
    lc, uc = wilson(x_c, n_c, z)
    pt, pc = x_t / n_t, x_c / n_c
    d = pt - pc
    lower = d - np.sqrt((pt - lt) ** 2 + (uc - pc) ** 2)
    upper = d + np.sqrt((ut - pt) ** 2 + (pc - lc) ** 2)
    return np.asarray((lower > 0) | (upper < 0))


def naive_reject(paths: Paths) -> BoolArray:
    """Pooled two-proportion z test at every look, |z| >= 1.96, no gates."""
    pooled = (paths.x_c + paths.x_t) / (paths.n_c + paths.n_t)
    se = np.sqrt(pooled * (1 - pooled) * (1 / paths.n_c + 1 / paths.n_t))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (paths.x_t / paths.n_t - paths.x_c / paths.n_c) / se
    return np.asarray((np.abs(np.nan_to_num(z)) >= stats.norm.isf(ALPHA / 2)).any(axis=1))


def decisions(paths: Paths, relative: bool = True) -> dict[str, BoolArray]:
    gate = gates(paths)
    est, var = effect(
        paths.x_c / paths.n_c,
        paths.x_t / paths.n_t,
        ac_variance(paths.x_c, paths.n_c),
        ac_variance(paths.x_t, paths.n_t),
        relative,
    )
    info = information(paths.n_c, paths.n_t)
    # without a horizon: tau^2 from the relative MDE (on the log scale, log(1 + mde); on the
    # absolute scale mde times the control)
    mde = math.log1p(MDE) if relative else MDE * paths.x_c / paths.n_c
    return {
        "naive z": naive_reject(paths),
        "always_valid": (always_valid_reject(est, var, info) & gate).any(axis=1),
        "group_sequential": group_sequential_reject(est, var, gate, info),
        "fixed": fixed_reject(paths, relative),
        "always_valid, no horizon": (
            plain_mixture_reject(est, var, mde_mixing_variance(mde)) & gate
        ).any(axis=1),
    }


def in_chunks(
    rng: np.random.Generator, sims: int, chunk: int, run: object, *args: object
) -> dict[str, Array]:
    results: dict[str, list[BoolArray]] = {}
    done = 0
    while done < sims:
        size = min(chunk, sims - done)
        for key, value in run(rng, size, *args).items():  # type: ignore[operator]
            results.setdefault(key, []).append(value)
        done += size
    return {key: np.concatenate(values).astype(float) for key, values in results.items()}


def rate(hits: Array) -> str:
    if not hits.any():
        return f"0 of {hits.size:>6}"
    p = float(hits.mean())
    se = math.sqrt(max(p * (1 - p), 1e-12) / hits.size)
    return f"{p:6.4f} ± {se:6.4f}"


# ------------------------------------------------------------------------------------ scenarios


def run_fixed_grid(
    rng: np.random.Generator,
    sims: int,
    looks: int,
    p_t: float,
    relative: bool,
    n_c_max: int = N_MAX,
    n_t_max: int = N_MAX,
) -> dict[str, BoolArray]:
    paths = simulate(rng, sims, looks, BASELINE, p_t, n_c_max, n_t_max)
    return decisions(paths, relative)


def run_ramp(
    rng: np.random.Generator, sims: int, looks: int, total_units: int
) -> dict[str, BoolArray]:
    """A/A during a ramp: treatment share 5 -> 25 -> 50 % in three equal-time epochs, baseline
    drifting linearly from -10 % to +10 %. Stratified (by epoch) vs pooled estimator."""
    shares = (0.05, 0.25, 0.50)
    epochs = len(shares)
    per_look = total_units // looks
    n = np.zeros((2, sims, epochs))  # [arm, sim, epoch], arm 0 control, 1 treatment
    x = np.zeros((2, sims, epochs))
    est = np.zeros((sims, looks))
    var = np.zeros((sims, looks))
    est_pooled = np.zeros((sims, looks))
    var_pooled = np.zeros((sims, looks))
    gate = np.zeros((sims, looks), dtype=bool)
    info = np.zeros((sims, looks))
    for look in range(looks):
        epoch = min(look * epochs // looks, epochs - 1)
        p = BASELINE * (0.9 + 0.2 * (look + 0.5) / looks)
        treated = round(per_look * shares[epoch])
        n[0, :, epoch] += per_look - treated
        n[1, :, epoch] += treated
        x[0, :, epoch] += rng.binomial(per_look - treated, p, size=sims)
        x[1, :, epoch] += rng.binomial(treated, p, size=sims)
        units = n.sum(axis=2)
        events = x.sum(axis=2)
        gate[:, look] = (units >= MIN_UNITS).all(axis=0) & (events >= MIN_EVENTS).all(axis=0)
        usable = (n > 0).all(axis=0)  # strata with units in both arms
        weights = np.where(usable, n.sum(axis=0), 0.0)
        weights = weights / weights.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            rates = np.where(n > 0, x / n, 0.0)
        arm_est = (weights * rates).sum(axis=2)
        arm_var = (weights**2 * ac_variance(x, n)).sum(axis=2)
        est[:, look], var[:, look] = effect(arm_est[0], arm_est[1], arm_var[0], arm_var[1], True)
        est_pooled[:, look], var_pooled[:, look] = effect(
            events[0] / units[0],
            events[1] / units[1],
            ac_variance(events[0], units[0]),
            ac_variance(events[1], units[1]),
            True,
        )
        info[:, look] = information(units[0], units[1])
    return {
        "stratified always_valid": (always_valid_reject(est, var, info) & gate).any(axis=1),
        "stratified group_sequential": group_sequential_reject(est, var, gate, info),
        "pooled (unstratified) always_valid": (
            always_valid_reject(est_pooled, var_pooled, info) & gate
        ).any(axis=1),
    }


def run_non_inferiority(rng: np.random.Generator, sims: int, looks: int) -> dict[str, BoolArray]:
    """A guardrail whose treatment is worse by exactly the margin (p_t = 0.1 x 0.95, higher is
    better): declaring it non-inferior is the error. One-sided tests at alpha on the relative
    scale, as ``compare(alternative="greater", margin=0.05)``."""
    return _non_inferiority_decisions(simulate(rng, sims, looks, BASELINE, BASELINE * (1 - MARGIN)))


def _non_inferiority_decisions(paths: Paths) -> dict[str, BoolArray]:
    sims = paths.n_c.shape[0]
    gate = gates(paths)
    est, var = effect(
        paths.x_c / paths.n_c,
        paths.x_t / paths.n_t,
        ac_variance(paths.x_c, paths.n_c),
        ac_variance(paths.x_t, paths.n_t),
        True,
    )
    null = math.log1p(-MARGIN)  # lift >= -5 % on the log scale
    x = est - null
    z = x / np.sqrt(var)
    # always_valid: one-sided half-normal mixture at Ville's threshold, tau^2 from the margin
    r = optimal_mixing_ratio(2 * ALPHA)
    tau2 = r / (1 + r) * null**2
    total = var + tau2
    log_lr = (
        math.log(2.0)
        + 0.5 * np.log(var / total)
        + x**2 * tau2 / (2 * var * total)
        + special.log_ndtr(x * np.sqrt(tau2 / (var * total)))
    )
    always = ((log_lr >= math.log(1 / ALPHA)) & gate).any(axis=1)
    # group sequential: one-sided O'Brien-Fleming-type spending at the looks compare takes
    info = information(paths.n_c, paths.n_t)
    group = np.zeros(sims, dtype=bool)
    first_look = np.where(gate.any(axis=1), gate.argmax(axis=1), -1)
    for first in np.unique(first_look[first_look >= 0]):
        rows = first_look == first
        fractions = info[np.argmax(rows)]
        taken = [k for k in thinned_looks(fractions, int(first)) if fractions[k] >= MIN_INCREMENT]
        bounds = np.asarray(
            spending_boundaries(tuple(fractions[taken]), ALPHA, "obrien_fleming", two_sided=False)
        )
        group[rows] = (z[np.ix_(rows, taken)] >= bounds).any(axis=1)
    fixed = z[:, -1] >= stats.norm.isf(ALPHA)
    return {"always_valid": always, "group_sequential": group, "fixed": fixed}


def run_srm(
    rng: np.random.Generator, sims: int, checks: int, units_per_check: int, share: float
) -> dict[str, BoolArray]:
    counts = np.cumsum(rng.binomial(units_per_check, share, size=(sims, checks)), axis=1)
    totals = units_per_check * np.arange(1, checks + 1)
    a, b = counts.astype(float), (totals - counts).astype(float)
    # Dirichlet-multinomial Bayes factor (abstats.stats._srm._log_bayes_factor), shares 1/2
    conc = 1000.0
    prior = conc * 0.5
    log_bf = (
        special.gammaln(conc)
        - special.gammaln(conc + totals)
        + special.gammaln(prior + a)
        + special.gammaln(prior + b)
        - 2 * special.gammaln(prior)
        + totals * math.log(2)
    )
    chi2 = (a - totals / 2) ** 2 / (totals / 2) + (b - totals / 2) ** 2 / (totals / 2)
    p_chi2 = stats.chi2.sf(chi2, 1)
    return {
        "sequential (Dirichlet-multinomial, p <= 0.01)": (log_bf >= math.log(100)).any(axis=1),
        "_first sequential": np.where(
            (log_bf >= math.log(100)).any(axis=1),
            (log_bf >= math.log(100)).argmax(axis=1),
            checks,
        ),
        "chi-square, p < 0.001 at every check": (p_chi2 < 0.001).any(axis=1),
        "chi-square, p < 0.0001 at every check": (p_chi2 < 0.0001).any(axis=1),
        "chi-square, p < 0.01 at every check": (p_chi2 < 0.01).any(axis=1),
    }


# ------------------------------------------------------------------------------- mirror check


def mirror_check(rng: np.random.Generator, sims: int, looks: int) -> tuple[int, int]:
    """Replay simulated experiments through ``compare`` and count agreeing decisions: the
    superiority paths at a +10 % lift and the non-inferiority paths at the margin."""
    agree = 0
    total = 0
    designs = {
        "always_valid": InferenceDesign(
            "always_valid", ALPHA, MDE, N_MAX, min_units_per_variant=MIN_UNITS
        ),
        "always_valid, no horizon": InferenceDesign(
            "always_valid", ALPHA, MDE, None, min_units_per_variant=MIN_UNITS
        ),
        "group_sequential": InferenceDesign(
            "group_sequential", ALPHA, MDE, N_MAX, min_units_per_variant=MIN_UNITS
        ),
    }
    superiority = simulate(rng, sims, looks, BASELINE, BASELINE * (1 + LIFT))
    mirrored = decisions(superiority, relative=True)
    guardrail_rng = np.random.default_rng(int(rng.integers(1 << 31)))
    guardrail = simulate(guardrail_rng, sims, looks, BASELINE, BASELINE * (1 - MARGIN))
    ni = _non_inferiority_decisions(guardrail)
    for paths, expected, margin in ((superiority, mirrored, None), (guardrail, ni, MARGIN)):
        gate = gates(paths)
        for s in range(sims):
            for method, design in designs.items():
                if margin is not None and method == "always_valid, no horizon":
                    continue
                state = SequentialState()
                decided = False
                for k in range(looks):
                    if not gate[s, k]:
                        continue
                    result = compare(
                        ProportionStats(int(paths.n_c[s, k]), int(paths.x_c[s, k])),
                        ProportionStats(int(paths.n_t[s, k]), int(paths.x_t[s, k])),
                        design=design,
                        previous=state,
                        alternative="two-sided" if margin is None else "greater",
                        margin=margin,
                    )
                    state = result.state
                    decided = decided or bool(
                        result.significant if margin is None else result.non_inferior
                    )
                agree += int(decided == bool(expected[method][s]))
                total += 1
    return agree, total


def ramp_mirror_check() -> bool:
    """The stratified estimator in ``compare_stratified`` equals the ramp mirror's on one draw."""
    rng = np.random.default_rng(7)
    strata = []
    rates_c, rates_t, weights = [], [], []
    for share, p in ((0.05, 0.09), (0.25, 0.10), (0.5, 0.11)):
        nt = int(rng.binomial(4000, share))
        nc = 4000 - nt
        xc, xt = int(rng.binomial(nc, p)), int(rng.binomial(nt, p))
        strata.append((ProportionStats(nc, xc), ProportionStats(nt, xt)))
        rates_c.append(xc / nc)
        rates_t.append(xt / nt)
        weights.append(4000)
    w = np.asarray(weights) / sum(weights)
    result = compare_stratified(strata, design=InferenceDesign("fixed"), relative=False)
    return bool(
        math.isclose(result.absolute_effect, float(w @ rates_t - w @ rates_c), rel_tol=1e-12)
    )


# -------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer simulations (seconds)")
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args()
    sims = 2_000 if args.quick else 10_000
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    chunk = 2_000

    print(
        f"abstats sequential-testing simulation: {sims} simulated experiments per cell, seed {args.seed}"
    )
    print(f"binary metric p = {BASELINE}, up to {N_MAX} units per arm, alpha = {ALPHA} two-sided,")
    print(f"gates {MIN_UNITS} units and {MIN_EVENTS} events per arm (not for the naive z-test),")
    print(
        "relative effect (default), always_valid tuned to the horizon, O'Brien-Fleming-type spending"
    )
    print("rates are 'mean ± Monte-Carlo SE'\n")

    header = f"{'looks':>6} {'method':<26} {'A/A false-positive rate':>24} {'power at +10%':>17} {'power / fixed':>14}"
    print(header)
    print("-" * len(header))
    fixed_power: Array | None = None
    for looks in (20, 100, 1000):
        null = in_chunks(rng, sims, chunk, run_fixed_grid, looks, BASELINE, True)
        alt = in_chunks(rng, sims, chunk, run_fixed_grid, looks, BASELINE * (1 + LIFT), True)
        if fixed_power is None:
            fixed_power = alt["fixed"]
        assert fixed_power is not None
        for method in ("naive z", "always_valid", "group_sequential", "always_valid, no horizon"):
            ratio = alt[method].mean() / fixed_power.mean()
            exact = ""
            if method == "naive z":
                t = [(k + 1) / looks for k in range(looks)]
                exact = f"  (normal theory {crossing_probability([1.959964] * looks, t):.3f})"
            print(
                f"{looks:>6} {method:<26} {rate(null[method]):>24} {rate(alt[method]):>17} {ratio:>14.3f}{exact}"
            )
    assert fixed_power is not None
    print(f"{'':>6} {'fixed horizon':<26} {'':>24} {rate(fixed_power):>17} {1.0:>14.3f}")
    print(
        "(group_sequential takes a new interim look when the information fraction grew by >= 0.01,"
    )
    print(" so 1,000 analyses give at most ~100 looks; naive z uses all looks from the first unit;")
    print(" 'no horizon': the plain mixture SPRT, valid for ever, tuned from mde = 10 %)\n")

    print("other decision paths under their null hypothesis (100 looks): false-positive rates")
    scenarios = [
        ("relative effect, 50/50", dict(relative=True)),
        ("absolute effect, 50/50", dict(relative=False)),
        ("relative effect, 20/80 split", dict(relative=True, n_c_max=32_000, n_t_max=8_000)),
        ("absolute effect, 20/80 split", dict(relative=False, n_c_max=32_000, n_t_max=8_000)),
    ]
    for label, kwargs in scenarios:
        null = _scenario(rng, sims, chunk, kwargs)
        for method in ("always_valid", "always_valid, no horizon", "group_sequential", "fixed"):
            print(f"  {label:<30} {method:<26} {rate(null[method]):>18}")
    guardrail = in_chunks(rng, sims, chunk, run_non_inferiority, 100)
    label = "non-inferior at -5 % (at H0)"
    for method in ("always_valid", "group_sequential", "fixed"):
        print(f"  {label:<30} {method:<26} {rate(guardrail[method]):>18}")
    print()

    ramp_sims = sims // 2
    ramp = in_chunks(rng, ramp_sims, 1_000, run_ramp, 60, 40_000)
    print(
        f"A/A under a ramp (5 -> 25 -> 50 %, baseline drifting -10 % -> +10 %, 60 looks, 40,000 units, {ramp_sims} sims)"
    )
    for key, value in ramp.items():
        print(f"  {key:<30} false-positive rate {rate(value)}")
    print(
        f"  compare_stratified matches the mirror's stratified estimator: {ramp_mirror_check()}\n"
    )

    srm_null = in_chunks(rng, sims, chunk, run_srm, 1000, 200, 0.5)
    srm_alt = in_chunks(rng, sims, chunk, run_srm, 1000, 200, 0.49)
    print("sample ratio mismatch, 1,000 checks every 200 units up to 100,000 units per arm")
    print(f"  {'check':<46} {'false alarm (50/50)':>20} {'detects 49/51':>18}")
    for key in srm_null:
        if key.startswith("_"):
            continue
        print(f"  {key:<46} {rate(srm_null[key]):>20} {rate(srm_alt[key]):>18}")
    first = (srm_alt["_first sequential"] + 1) * 200 / 2
    print(
        f"  49/51: the sequential test flags it by {np.median(first):,.0f} units per arm (median;"
        f" 90 % by {np.quantile(first, 0.9):,.0f})"
    )
    single = srm_check_epochs([EpochCounts({"a": 98_000, "b": 102_000}, {"a": 1, "b": 1})])
    print(
        f"  observed 98,000 / 102,000 against 50/50: sequential p = {single.p_value:.2e}, "
        f"mismatch = {single.mismatch}\n"
    )

    agree, total = mirror_check(np.random.default_rng(args.seed + 1), 3 if args.quick else 8, 20)
    print(f"mirror check: compare() and the vectorised mirror agree on {agree}/{total} decisions")
    print(f"elapsed {time.perf_counter() - started:.1f} s")


def _scenario(
    rng: np.random.Generator, sims: int, chunk: int, kwargs: dict[str, object]
) -> dict[str, Array]:
    def run(r: np.random.Generator, size: int) -> dict[str, BoolArray]:
        return run_fixed_grid(r, size, 100, BASELINE, **kwargs)  # type: ignore[arg-type]

    return in_chunks(rng, sims, chunk, run)


if __name__ == "__main__":
    main()
