"""Covariate adjustment (CUPED; Deng, Xu, Kohavi and Walker 2013, WSDM) from sufficient statistics.

Each unit has an outcome ``y`` and a covariate ``x`` measured before it was exposed (e.g. the same
outcome over a lookback before its first exposure), so ``x`` cannot be moved by the treatment.
One pooled coefficient ``theta = Cov(x, y) / Var(x)``, from the within-cell (arm x stratum)
covariances so that neither a treatment effect nor an epoch's drift leaks into it; each unit's
adjusted outcome is ``y - theta (x - mean x)``, with ``mean x`` pooled over every unit. The
adjusted arm means have the raw means' expectation (``x`` is balanced by randomisation) and a
variance smaller by the factor ``1 - rho^2``. The adjusted outcomes are handed on as
:class:`MeanStats`, so :func:`abstats.stats.compare` and :func:`compare_stratified` test them
under every design (fixed, always valid, group sequential) and epoch weighting; ``theta`` is
estimated from the same data and treated as known, which is asymptotically exact (the estimator
is regression adjustment, Lin 2013, Ann. Appl. Stat. 7).

Units without a covariate (no events before their exposure) have ``x = 0``: zero-filled. The
variance reduction is smaller for them but the estimate stays unbiased.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from abstats.stats._sufficient import MeanStats


@dataclass(frozen=True, slots=True)
class CovariateStats:
    """One cell's units summarised for covariate adjustment.

    SQL: ``count(*), sum(y), sum(y * y), sum(x), sum(x * x), sum(x * y)`` over one row per unit.
    """

    n: int = 0
    sum_y: float = 0.0
    sum_y2: float = 0.0
    sum_x: float = 0.0
    sum_x2: float = 0.0
    sum_xy: float = 0.0

    def __post_init__(self) -> None:
        if self.n < 0 or self.sum_y2 < 0 or self.sum_x2 < 0:
            raise ValueError("n, sum_y2 and sum_x2 cannot be negative")
        values = (self.sum_y, self.sum_y2, self.sum_x, self.sum_x2, self.sum_xy)
        if not all(math.isfinite(v) for v in values):
            raise ValueError("CovariateStats sums must be finite")

    @classmethod
    def empty(cls) -> CovariateStats:
        return cls()

    def __add__(self, other: CovariateStats) -> CovariateStats:
        if not isinstance(other, CovariateStats):
            return NotImplemented
        return CovariateStats(
            self.n + other.n,
            self.sum_y + other.sum_y,
            self.sum_y2 + other.sum_y2,
            self.sum_x + other.sum_x,
            self.sum_x2 + other.sum_x2,
            self.sum_xy + other.sum_xy,
        )

    @property
    def outcome(self) -> MeanStats:
        """The unadjusted outcome."""
        return MeanStats(self.n, self.sum_y, max(self.sum_y2, 0.0))

    def centred(self) -> tuple[float, float, float]:
        """``(S_xx, S_xy, S_yy)``: sums of centred squares and cross products in the cell."""
        if self.n == 0:
            return 0.0, 0.0, 0.0
        return (
            self.sum_x2 - self.sum_x**2 / self.n,
            self.sum_xy - self.sum_x * self.sum_y / self.n,
            self.sum_y2 - self.sum_y**2 / self.n,
        )

    def adjusted(self, theta: float, mean_x: float) -> MeanStats:
        """The cell's adjusted outcomes ``y - theta (x - mean_x)`` as :class:`MeanStats`."""
        total = self.sum_y - theta * (self.sum_x - self.n * mean_x)
        squares = (
            self.sum_y2
            - 2 * theta * (self.sum_xy - mean_x * self.sum_y)
            + theta**2 * (self.sum_x2 - 2 * mean_x * self.sum_x + self.n * mean_x**2)
        )
        # rounding can leave a square sum a hair below its floor sum^2 / n
        return MeanStats(self.n, total, max(squares, total * total / self.n if self.n else 0.0))


@dataclass(frozen=True)
class CupedAdjustment:
    """What :func:`cuped` found: the coefficient, the covariate's pooled mean, the share of the
    outcome's within-cell variance removed (``rho^2`` within cells), and the adjusted strata."""

    theta: float
    mean_x: float
    variance_reduction: float
    strata: list[tuple[MeanStats, MeanStats]]


def cuped(strata: Sequence[tuple[CovariateStats, CovariateStats]]) -> CupedAdjustment:
    """Adjust ``(control, treatment)`` per stratum with one pooled ``theta`` (module docstring).

    Without covariate variation (``S_xx = 0``: every ``x`` alike) ``theta`` is 0 and the adjusted
    strata are the raw outcomes."""
    cells = [cell for pair in strata for cell in pair]
    units = sum(c.n for c in cells)
    mean_x = sum(c.sum_x for c in cells) / units if units else 0.0
    s_xx = s_xy = s_yy = 0.0
    for cell in cells:
        xx, xy, yy = cell.centred()
        s_xx, s_xy, s_yy = s_xx + xx, s_xy + xy, s_yy + yy
    theta = s_xy / s_xx if s_xx > 1e-12 * max(abs(s_yy), 1.0) else 0.0
    reduction = 0.0
    if s_yy > 0 and theta != 0.0:
        reduction = min(max(theta * s_xy / s_yy, 0.0), 1.0)  # S_xy^2 / (S_xx S_yy)
    return CupedAdjustment(
        theta=theta,
        mean_x=mean_x,
        variance_reduction=reduction,
        strata=[(c.adjusted(theta, mean_x), t.adjusted(theta, mean_x)) for c, t in strata],
    )
