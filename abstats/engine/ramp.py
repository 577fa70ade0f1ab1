"""Pure policy helpers: ramp positions, weight vectors for ramp steps, integer percentages.

No database here (import-linter contract): these functions work on plain dicts and the
``abstats.engine.specs.Policy`` model.

Ramp semantics (``docs/policy.md``, "Ramp"):

- A ramp step is the share, in percent, of *all* active candidates together (every non-control
  variant that is not retired). With several candidates the step is split equally among them and
  the control keeps the rest: steps ``[10, 50]`` with candidates v2 and v3 give
  ``{control: 90, v2: 5, v3: 5}`` then ``{control: 50, v2: 25, v3: 25}``.
- A step of 100 means full traffic, which is what a promotion does: the ramp advances through the
  steps below 100, and at the highest step below 100 (the *promotion step*) the promotion rule
  decides. A ramp whose last step is below 100 stops at that step, which is then the promotion
  step.
- The current step is never stored: it is the step nearest to the candidates' current total share.
  So a manual reweight "resets the ramp to the nearest step" by construction, and the next advance
  goes to the step after that one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from abstats.engine.specs import RampRule

FULL_TRAFFIC = 100.0


def shares(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights -> shares in percent (sum 100)."""
    total = sum(weights.values())
    if total <= 0:
        return {k: 0.0 for k in weights}
    return {k: 100.0 * w / total for k, w in weights.items()}


def candidate_share(weights: Mapping[str, float], candidates: Sequence[str]) -> float:
    """Total share (percent) of the candidates."""
    s = shares(weights)
    return sum(s.get(c, 0.0) for c in candidates)


def ramp_steps(ramp: RampRule) -> list[float]:
    """The steps the ramp walks through by itself: every step below 100 (see module docstring)."""
    below = [float(s) for s in ramp.steps if s < FULL_TRAFFIC]
    return below


def nearest_step_index(ramp: RampRule, share: float) -> int | None:
    """Index into ``ramp_steps`` of the step nearest to ``share``; ties go to the lower step.
    None when the ramp has no step below 100."""
    steps = ramp_steps(ramp)
    if not steps:
        return None
    return min(range(len(steps)), key=lambda i: (abs(steps[i] - share), i))


def weights_for_step(step: float, control: str, candidates: Sequence[str]) -> dict[str, float]:
    """Weights (percent) giving the candidates ``step`` percent together, split equally."""
    if not candidates:
        return {control: FULL_TRAFFIC}
    each = step / len(candidates)
    weights = {control: FULL_TRAFFIC - step}
    for c in candidates:
        weights[c] = each
    return weights


def all_to(variant: str, variants: Sequence[str]) -> dict[str, float]:
    """Weights sending all traffic to ``variant``."""
    return {v: (FULL_TRAFFIC if v == variant else 0.0) for v in variants}


def largest_remainder_percentages(weights: Mapping[str, float]) -> dict[str, int]:
    """Integer percentages summing to exactly 100 (Hamilton's largest-remainder method).

    Each variant gets the floor of its exact share; the points still missing go, one each, to the
    variants with the largest fractional parts (ties: the order of ``weights``). A variant with
    weight 0 always gets 0.
    """
    total = sum(weights.values())
    if total <= 0 or any(w < 0 or not math.isfinite(w) for w in weights.values()):
        raise ValueError("weights must be finite, non-negative and not all 0")
    exact = {k: 100.0 * w / total for k, w in weights.items()}
    floors = {k: math.floor(v + 1e-9) for k, v in exact.items()}
    missing = 100 - sum(floors.values())
    order = sorted(
        (k for k in weights if weights[k] > 0),
        key=lambda k: -(exact[k] - floors[k]),
    )
    for k in order[: max(missing, 0)]:
        floors[k] += 1
    return floors


def weights_differ(a: Mapping[str, float], b: Mapping[str, float], *, tolerance: float) -> bool:
    """Whether two weight vectors differ by more than ``tolerance`` percentage points of share."""
    sa, sb = shares(a), shares(b)
    keys = set(sa) | set(sb)
    return any(abs(sa.get(k, 0.0) - sb.get(k, 0.0)) > tolerance for k in keys)
