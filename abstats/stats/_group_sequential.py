"""Group-sequential boundaries by recursive numerical integration.

The z-statistics ``Z_1, ..., Z_K`` of a sequence of looks at information fractions
``t_1 < ... < t_K`` are jointly normal with ``cov(Z_j, Z_k) = sqrt(t_j / t_k)``; equivalently the
score ``S_k = Z_k sqrt(t_k)`` has independent increments ``N(drift * dt, dt)``. The probability of
continuing to look ``k`` and then crossing is computed by integrating the density of ``Z_{k-1}``
on the continuation region, propagated look to look (Armitage, McPherson and Rowe 1969), on the
grid and Simpson weights of Jennison and Turnbull (2000), *Group Sequential Methods with
Applications to Clinical Trials*, section 19.2. ``drift`` is the expected z-statistic at
``t = 1`` (``theta * sqrt(I_max)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

from abstats.stats._design import SpendingKind

FloatArray = NDArray[np.float64]

_RESOLUTION = 32  # Jennison and Turnbull's r; errors ~1e-7 or smaller at r = 32
_MAX_Z = 40.0  # boundaries at or above this are treated as "no crossing possible"
_TAIL = 9.0  # the grid covers mean +- 9 (tail mass below 1e-18)


def alpha_spent(kind: SpendingKind, information_fraction: float, alpha: float) -> float:
    """Lan-DeMets spending function: the error spent by information fraction ``t``.

    ``obrien_fleming``: ``alpha(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t))``;
    ``pocock``: ``alpha(t) = alpha log(1 + (e - 1) t)``.
    Source: Lan and DeMets (1983), Biometrika 70, 659-663. ``alpha`` is the level of one side:
    :func:`spending_boundaries` spends ``alpha / 2`` per side for a two-sided test, the
    convention of DeMets and Lan (1994), ``ldbounds`` and ``gsDesign``. Fractions above 1
    (overrunning) spend ``alpha``.
    """
    t = min(max(information_fraction, 0.0), 1.0)
    if t == 0.0:
        return 0.0
    if kind == "obrien_fleming":
        z = -float(special.ndtri(alpha / 2))
        return float(2 * special.ndtr(-z / math.sqrt(t)))
    if kind == "pocock":
        return float(alpha * math.log1p((math.e - 1) * t))
    raise ValueError(f"unknown spending function {kind!r}")


def _grid(
    mean: float, lower: float, upper: float, r: int, max_spacing: float = math.inf
) -> tuple[FloatArray, FloatArray]:
    """Grid points and Simpson weights on ``(lower, upper)`` (Jennison and Turnbull 19.2.1).

    The points of Jennison and Turnbull's grid (dense near ``mean``, log-spaced in the tails)
    are cut at ``mean +- _TAIL`` (beyond which the density is below 1e-17) and gaps wider than
    ``max_spacing`` are filled evenly, so that the next look's normal kernel, whose width
    shrinks with the information increment, is integrated accurately.
    """
    i = np.arange(1, 6 * r, dtype=float)
    x = np.where(
        i < r,
        -3 - 4 * np.log(r / i),
        np.where(
            i <= 5 * r, -3 + 3 * (i - r) / (2 * r), 3 + 4 * np.log(r / np.maximum(6 * r - i, 1))
        ),
    )
    x = mean + x[np.abs(x) <= _TAIL]
    lo = max(lower, mean - _TAIL)
    hi = min(upper, mean + _TAIL)
    if hi <= lo:
        return np.array([lo]), np.zeros(1)
    coarse = np.concatenate(([lo], x[(x > lo) & (x < hi)], [hi]))
    if math.isfinite(max_spacing):
        gaps = np.diff(coarse)
        pieces = np.maximum(np.ceil(gaps / max_spacing), 1).astype(int)
        if pieces.max() > 1:
            offsets = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
            refined = np.repeat(coarse[:-1], pieces) + offsets * np.repeat(gaps / pieces, pieces)
            coarse = np.concatenate((refined, coarse[-1:]))
    z = np.empty(2 * coarse.size - 1)
    z[0::2] = coarse
    z[1::2] = (coarse[:-1] + coarse[1:]) / 2
    w = np.zeros_like(z)
    # Simpson's rule on each coarse interval [z_{2j}, z_{2j+2}] with midpoint z_{2j+1}
    h = coarse[1:] - coarse[:-1]
    w[0:-1:2] += h / 6
    w[2::2] += h / 6
    w[1::2] += 4 * h / 6
    return z, w


def _check_fractions(information_fractions: Sequence[float]) -> FloatArray:
    t = np.asarray(information_fractions, dtype=float)
    if t.ndim != 1 or t.size == 0:
        raise ValueError("need at least one information fraction")
    if not np.all(np.isfinite(t)) or t[0] <= 0 or np.any(np.diff(t) <= 0):
        raise ValueError("information fractions must be positive and strictly increasing")
    return t


class _Recursion:
    """Propagates the sub-density of ``Z_k`` on the continuation region, look by look."""

    def __init__(self, drift: float, r: int) -> None:
        self.drift = drift
        self.r = r
        self.t_prev = 0.0
        self.z: FloatArray | None = None
        self.weighted: FloatArray | None = None  # Simpson weight * density at the grid points

    def crossing(self, t: float, lower: float, upper: float) -> float:
        """P(continue to this look and Z_t <= lower or Z_t >= upper)."""
        mean = self.drift * math.sqrt(t)
        if self.z is None or self.weighted is None:
            up = float(special.ndtr(mean - upper)) if upper < math.inf else 0.0
            low = float(special.ndtr(lower - mean)) if lower > -math.inf else 0.0
            return up + low
        dt = t - self.t_prev
        shift = self.z * math.sqrt(self.t_prev) + self.drift * dt
        sd = math.sqrt(dt)
        total = 0.0
        if upper < math.inf:
            total += float(self.weighted @ special.ndtr((shift - upper * math.sqrt(t)) / sd))
        if lower > -math.inf:
            total += float(self.weighted @ special.ndtr((lower * math.sqrt(t) - shift) / sd))
        return total

    def _propagate(self, z: FloatArray, t: float) -> FloatArray:
        """Density of ``Z_t`` at ``z``: the previous sub-density times the normal kernel of the
        increment, integrated over the previous grid (only the band where the kernel matters)."""
        assert self.z is not None and self.weighted is not None
        dt = t - self.t_prev
        sd = math.sqrt(dt)
        root_prev = math.sqrt(self.t_prev)
        scale = math.sqrt(t) / (sd * math.sqrt(2 * math.pi))
        # kernel centre and half-width in the previous look's z scale
        centre = (z * math.sqrt(t) - self.drift * dt) / root_prev
        half = 9.0 * sd / root_prev
        first = np.searchsorted(self.z, centre - half, side="left")
        last = np.searchsorted(self.z, centre + half, side="right")
        width = int((last - first).max())
        if width >= self.z.size:
            kernel = (
                z[:, None] * math.sqrt(t) - self.z[None, :] * root_prev - self.drift * dt
            ) / sd
            return np.asarray((np.exp(-0.5 * kernel * kernel) @ self.weighted) * scale)
        index = np.minimum(first[:, None] + np.arange(width)[None, :], self.z.size - 1)
        inside = (first[:, None] + np.arange(width)[None, :]) < last[:, None]
        kernel = (z[:, None] * math.sqrt(t) - self.z[index] * root_prev - self.drift * dt) / sd
        values = np.where(inside, np.exp(-0.5 * kernel * kernel) * self.weighted[index], 0.0)
        return np.asarray(values.sum(axis=1) * scale)

    def advance(self, t: float, lower: float, upper: float, next_t: float | None = None) -> None:
        """Condition on continuing at this look: density of Z_t on (lower, upper).

        The next look integrates this density against a normal kernel of standard deviation
        ``sqrt((next_t - t) / t)`` in ``Z_t``; the grid is refined so that its spacing stays
        below half of that (Jennison and Turnbull's grid assumes increments that are not tiny).
        """
        mean = self.drift * math.sqrt(t)
        spacing = math.sqrt((next_t - t) / t) if next_t is not None and next_t > t else math.inf
        z, w = _grid(mean, lower, upper, self.r, spacing)
        if self.z is None or self.weighted is None:
            density = np.exp(-0.5 * (z - mean) ** 2) / math.sqrt(2 * math.pi)
        else:
            density = self._propagate(z, t)
        self.z = z
        self.weighted = w * density
        self.t_prev = t


def _bounds(boundary: float, two_sided: bool) -> tuple[float, float]:
    upper = boundary if boundary < _MAX_Z else math.inf
    lower = -upper if two_sided else -math.inf
    return lower, upper


def _crossings(
    boundaries: Sequence[float],
    information_fractions: Sequence[float],
    drift: float,
    two_sided: bool,
    r: int,
) -> Iterator[float]:
    t = _check_fractions(information_fractions)
    if len(boundaries) != t.size:
        raise ValueError("need one boundary per information fraction")
    recursion = _Recursion(drift, r)
    for k, (tk, bk) in enumerate(zip(t, boundaries, strict=True)):
        lower, upper = _bounds(float(bk), two_sided)
        yield recursion.crossing(float(tk), lower, upper)
        if k + 1 < t.size:
            recursion.advance(float(tk), lower, upper, float(t[k + 1]))


def crossing_probability(
    boundaries: Sequence[float],
    information_fractions: Sequence[float],
    *,
    drift: float = 0.0,
    two_sided: bool = True,
    resolution: int = _RESOLUTION,
) -> float:
    """Probability that the z-statistic crosses a boundary at some look.

    With ``drift = 0`` this is the type I error of the boundaries (e.g. 0.248 for 20 naive looks
    at 1.96: Armitage, McPherson and Rowe 1969); with ``drift`` the expected z at ``t = 1`` it is
    the power.

    Parameters
    ----------
    boundaries : sequence of float
        Upper z boundaries ``b_k`` (``inf`` for "no test at this look"); two-sided tests reject
        when ``|Z_k| >= b_k``, one-sided when ``Z_k >= b_k``.
    information_fractions : sequence of float
        Strictly increasing ``t_k > 0``.
    drift : float
        Expected z-statistic at information fraction 1.
    two_sided : bool
    resolution : int
        Jennison and Turnbull's grid parameter ``r``.
    """
    return float(sum(_crossings(boundaries, information_fractions, drift, two_sided, resolution)))


def stopping_probabilities(
    boundaries: Sequence[float],
    information_fractions: Sequence[float],
    *,
    drift: float = 0.0,
    two_sided: bool = True,
    resolution: int = _RESOLUTION,
) -> tuple[float, ...]:
    """Probability of first crossing at each look (they sum to :func:`crossing_probability`)."""
    return tuple(_crossings(boundaries, information_fractions, drift, two_sided, resolution))


def _solve_boundary(recursion: _Recursion, t: float, target: float, two_sided: bool) -> float:
    def excess(b: float) -> float:
        lower, upper = _bounds(b, two_sided)
        return recursion.crossing(t, lower, upper) - target

    if target <= 1e-15 or excess(_MAX_Z) >= 0:
        return math.inf
    low = 0.0 if two_sided else -_MAX_Z
    # The crossing probability is at most the marginal tail, so the boundary lies at or below
    # the nominal one for this look's increment; search just under it first.
    nominal = -float(special.ndtri(min(target / (2 if two_sided else 1), 0.5)))
    high = min(nominal + 1e-9, _MAX_Z)
    start = max(high - 1.0, low)
    if excess(start) > 0 >= excess(high):
        return float(optimize.brentq(excess, start, high, xtol=1e-12, rtol=1e-12))
    if excess(low) <= 0:  # cannot spend that much here; reject everything that continued
        return low
    return float(optimize.brentq(excess, low, _MAX_Z, xtol=1e-12, rtol=1e-12))


@lru_cache(maxsize=256)
def _spending_boundaries_cached(
    fractions: tuple[float, ...], alpha: float, kind: SpendingKind, two_sided: bool, r: int
) -> tuple[float, ...]:
    recursion = _Recursion(0.0, r)
    boundaries: list[float] = []
    spent = 0.0
    side_alpha = alpha / 2 if two_sided else alpha
    sides = 2 if two_sided else 1
    for k, t in enumerate(fractions):
        cumulative = alpha_spent(kind, t, side_alpha)
        b = _solve_boundary(recursion, t, sides * (cumulative - spent), two_sided)
        boundaries.append(b)
        spent = cumulative
        if k + 1 < len(fractions):
            lower, upper = _bounds(b, two_sided)
            recursion.advance(t, lower, upper, fractions[k + 1])
    return tuple(boundaries)


def spending_boundaries(
    information_fractions: Sequence[float],
    alpha: float,
    kind: SpendingKind = "obrien_fleming",
    two_sided: bool = True,
    *,
    resolution: int = _RESOLUTION,
) -> tuple[float, ...]:
    """Lan-DeMets error-spending boundaries (z scale) at arbitrary information fractions.

    Look ``k``'s boundary ``b_k`` solves ``P(no crossing before k, crossing at k) =
    alpha(t_k) - alpha(t_{k-1})`` under the null, by recursive numerical integration (Jennison
    and Turnbull 2000, ch. 7 and 19; Lan and DeMets 1983). Only past and current fractions enter
    look ``k``'s boundary, so looks can be planned as data arrive. Two-sided boundaries are
    symmetric (reject when ``|Z_k| >= b_k``; ``alpha`` is the total two-sided error, spent as
    ``alpha / 2`` per side with :func:`alpha_spent`); one-sided
    boundaries reject when ``Z_k >= b_k``. ``inf`` means no alpha is spent at that look.

    Examples: O'Brien-Fleming-type spending, 5 equally spaced looks, two-sided 0.05:
    4.877, 3.357, 2.680, 2.290, 2.031.
    """
    t = _check_fractions(information_fractions)
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    return _spending_boundaries_cached(
        tuple(float(v) for v in t), float(alpha), kind, two_sided, resolution
    )


def classical_boundaries(
    looks: int,
    alpha: float,
    kind: SpendingKind = "obrien_fleming",
    two_sided: bool = True,
    *,
    resolution: int = _RESOLUTION,
) -> tuple[float, ...]:
    """Pocock (1977) and O'Brien and Fleming (1979) boundaries for ``looks`` equally spaced looks.

    Pocock: ``b_k = C_P``; O'Brien-Fleming: ``b_k = C_B sqrt(K / k)``; the constant solves
    ``P(crossing) = alpha`` by the same recursive integration. Reference values: Jennison and
    Turnbull (2000), Tables 2.1 and 2.3 (e.g. ``C_P(5, 0.05) = 2.413``, ``C_B(5, 0.05) = 2.040``).
    """
    if looks < 1:
        raise ValueError("looks must be >= 1")
    t = [(k + 1) / looks for k in range(looks)]
    shape = np.ones(looks) if kind == "pocock" else np.sqrt(looks / np.arange(1, looks + 1))

    def excess(c: float) -> float:
        return (
            crossing_probability(list(c * shape), t, two_sided=two_sided, resolution=resolution)
            - alpha
        )

    c = float(optimize.brentq(excess, 1.0, 5.0, xtol=1e-9))
    return tuple(float(v) for v in c * shape)
