"""How an experiment is analysed (the design) and what carries over between looks (the state)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from scipy import special

InferenceMethod = Literal["always_valid", "group_sequential", "fixed"]
SpendingKind = Literal["obrien_fleming", "pocock"]
Alternative = Literal["two-sided", "greater", "less"]


@dataclass(frozen=True, slots=True)
class InferenceDesign:
    """The inference a decision rests on (docs/statistics.md).

    Parameters
    ----------
    method : {"always_valid", "group_sequential", "fixed"}
        ``always_valid``: mixture SPRT p-values and confidence sequences, valid at every look.
        ``group_sequential``: Lan-DeMets alpha spending up to ``max_units_per_variant``.
        ``fixed``: one test at ``max_units_per_variant`` (before it, results are reported with
        status ``"before_horizon"`` and never significant); with ``max_units_per_variant=None``
        the current data are taken to be the planned horizon.
    alpha : float
        Type I error: two-sided for ``alternative="two-sided"``, one-sided otherwise.
    mde_relative : float or None
        Minimum detectable relative effect (0.02 for "2%"); tunes the always-valid mixture when
        ``max_units_per_variant`` is not given.
    mde_absolute : float or None
        Minimum detectable absolute effect (a difference); tunes the mixture of tests reported on
        the absolute scale (``relative=False``). Without it, ``mde_relative`` times the control's
        value is used, which is tiny, and so the confidence sequence very wide, for a metric near
        0 such as an error rate; the analysis sets it to an absolute guardrail margin.
    max_units_per_variant : int or None
        Planned maximum units per variant. Required for ``group_sequential``. For
        ``always_valid`` it tunes the mixture so that the confidence sequence is tightest there.
    spending : {"obrien_fleming", "pocock"}
        Lan-DeMets spending function type (group_sequential).
    min_units_per_variant : int
        Below this many units in either arm the result is ``"not_enough_data"`` (never below 2,
        which a variance needs). The policy's gates are applied again by the caller.
    calibrate_to_horizon : bool
        ``always_valid`` with ``max_units_per_variant``: calibrate the mixture's threshold so
        that continuous monitoring up to the horizon has error exactly ``alpha`` (instead of
        Ville's ``1/alpha``, which is conservative when the experiment stops at the horizon);
        no new rejection is made after the horizon. Without a horizon the plain mixture SPRT is
        used, valid for ever.
    min_information_increment : float
        Group-sequential only: a new interim look is taken when the information fraction grew by
        at least this much since the previous look (bounds the number of looks, and the cost of
        the recursive integration, when the scheduler re-analyses every few minutes); in between,
        the previous look's decision is carried.
    """

    method: InferenceMethod = "always_valid"
    alpha: float = 0.05
    mde_relative: float | None = 0.02
    max_units_per_variant: int | None = None
    spending: SpendingKind = "obrien_fleming"
    min_units_per_variant: int = 2
    min_information_increment: float = 0.01
    calibrate_to_horizon: bool = True
    mde_absolute: float | None = None  # last, so positional construction keeps its meaning

    def __post_init__(self) -> None:
        if self.method not in ("always_valid", "group_sequential", "fixed"):
            raise ValueError(f"unknown inference method {self.method!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if self.mde_relative is not None and not (
            self.mde_relative > 0 and math.isfinite(self.mde_relative)
        ):
            raise ValueError("mde_relative must be > 0")
        if self.mde_absolute is not None and not (
            self.mde_absolute > 0 and math.isfinite(self.mde_absolute)
        ):
            raise ValueError("mde_absolute must be > 0")
        if self.max_units_per_variant is not None and self.max_units_per_variant < 2:
            raise ValueError("max_units_per_variant must be >= 2")
        if self.method == "group_sequential" and self.max_units_per_variant is None:
            raise ValueError("group_sequential needs max_units_per_variant")
        if (
            self.method == "always_valid"
            and self.mde_relative is None
            and self.max_units_per_variant is None
        ):
            raise ValueError("always_valid needs mde_relative or max_units_per_variant")
        if self.spending not in ("obrien_fleming", "pocock"):
            raise ValueError(f"unknown spending function {self.spending!r}")
        if self.min_units_per_variant < 0:
            raise ValueError("min_units_per_variant must be >= 0")
        if not 0 <= self.min_information_increment < 1:
            raise ValueError("min_information_increment must be in [0, 1)")


@dataclass(frozen=True, slots=True)
class SequentialState:
    """What one comparison carries from one look to the next (store it in the snapshot).

    ``ComparisonResult.state`` is the state to store after a look; pass it back as ``previous``
    to the next :func:`abstats.stats.compare` of the same metric and variant.

    Parameters
    ----------
    p_value : float or None
        The always-valid / repeated p-value so far (p-values are made non-increasing:
        ``p_t = min(p_{t-1}, new)``).
    non_inferiority_p_value : float or None
        The same for the non-inferiority test.
    information_fractions : tuple of float
        Group-sequential: information fractions of the interim looks taken so far.
    interval : tuple (lower, upper, scale) or None
        Sequential designs: the running intersection of the intervals of every look so far, on
        ``scale`` ("relative" or "absolute"). A confidence sequence (or a set of repeated
        confidence intervals) covers the effect at every look at once, so their intersection does
        too; it is the interval that agrees with the running-minimum p-value.
    """

    p_value: float | None = None
    non_inferiority_p_value: float | None = None
    information_fractions: tuple[float, ...] = ()
    interval: tuple[float, float, str] | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form."""
        return {
            "p_value": self.p_value,
            "non_inferiority_p_value": self.non_inferiority_p_value,
            "information_fractions": list(self.information_fractions),
            "interval": list(self.interval) if self.interval is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None) -> SequentialState:
        """Inverse of :meth:`to_dict`; ``None`` or ``{}`` give the initial state."""
        if not data:
            return cls()
        p = data.get("p_value")
        ni = data.get("non_inferiority_p_value")
        fractions = data.get("information_fractions") or []
        if not isinstance(fractions, list | tuple):
            raise ValueError("information_fractions must be a list")
        interval = data.get("interval")
        kept: tuple[float, float, str] | None = None
        if isinstance(interval, list | tuple) and len(interval) == 3:
            lo, hi, scale = interval
            if (
                isinstance(lo, int | float)
                and isinstance(hi, int | float)
                and isinstance(scale, str)
            ):
                kept = (float(lo), float(hi), scale)
        return cls(
            float(p) if isinstance(p, int | float) else None,
            float(ni) if isinstance(ni, int | float) else None,
            tuple(float(f) for f in fractions),
            kept,
        )


def norm_isf(q: float) -> float:
    """The standard normal's inverse survival function, ``scipy.stats.norm.isf(q)``, through
    ``scipy.special.ndtri`` (the same function without the distribution machinery's overhead,
    which dominated every comparison)."""
    return float(-special.ndtri(q))
