"""Typed results. Every test ends in a frozen ``*Result`` with a ``status`` code; ``to_dict``
gives plain JSON (non-finite floats become ``None``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal, cast

from abstats.stats._design import Alternative, SequentialState

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Status = Literal["ok", "not_enough_data", "degenerate", "before_horizon"]


def _json_value(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, SequentialState):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


class _ToDict:
    __slots__ = ()

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable dict; NaN and infinities become ``None``."""
        instance = cast("DataclassInstance", self)
        return {f.name: _json_value(getattr(self, f.name)) for f in fields(instance)}


@dataclass(frozen=True, slots=True)
class ComparisonResult(_ToDict):
    """Treatment against control on one metric.

    Attributes
    ----------
    status : {"ok", "not_enough_data", "degenerate", "before_horizon"}
        Only ``"ok"`` results may be significant or non-inferior, except that a non-inferiority
        verdict on an absolute margin survives an undefined relative effect.
    message : str
        Why, for people, when status is not ``"ok"`` (and notes otherwise).
    method : str
        The inference design (``always_valid``, ``group_sequential``, ``fixed``).
    test : str
        The estimator / interval, e.g. ``"welch"``, ``"newcombe"``, ``"delta_method"``,
        ``"delong"``, ``"clustered_quantile"``.
    effect_scale : {"relative", "absolute"}
        Scale of ``standard_error``, ``ci_lower``, ``ci_upper`` and ``p_value``.
    control_estimate, treatment_estimate : float
        Per-arm estimates (mean, proportion, ratio, AUC, quantile); NaN when undefined.
    control_units, treatment_units : int
    absolute_effect : float
        ``treatment - control``.
    relative_effect : float
        ``treatment / control - 1`` (NaN when the control estimate is 0).
    standard_error : float
        Of the effect on ``effect_scale``.
    ci_lower, ci_upper : float
        Interval for the effect on ``effect_scale``: fixed confidence interval, confidence
        sequence (always_valid) or repeated confidence interval (group_sequential). One-sided
        alternatives give an open bound: infinite, or -1 for a relative effect tested on the log
        scale (the smallest possible lift).
    p_value : float
        Against "no effect", for ``alternative``; always-valid / repeated p-values are
        non-increasing over looks.
    significant : bool
        ``p_value <= alpha`` (group sequential: the boundary was crossed) with status ``"ok"``.
    margin, margin_relative : float or None, bool
        Non-inferiority margin (positive; relative to the control or absolute).
    non_inferior : bool or None
        ``None`` without a margin; otherwise whether the one-sided non-inferiority test rejects
        "worse by at least the margin".
    non_inferiority_p_value : float or None
    information_fraction : float or None
        Group sequential: information at this look relative to the maximum.
    boundary : float or None
        Group sequential: the z boundary of this look.
    state : SequentialState
        Store and pass back as ``previous`` at the next look.
    """

    status: Status
    message: str
    method: str
    test: str
    alternative: Alternative
    alpha: float
    effect_scale: Literal["relative", "absolute"]
    control_estimate: float
    treatment_estimate: float
    control_units: int
    treatment_units: int
    absolute_effect: float
    relative_effect: float
    standard_error: float
    ci_lower: float
    ci_upper: float
    p_value: float
    significant: bool
    margin: float | None = None
    margin_relative: bool = True
    non_inferior: bool | None = None
    non_inferiority_p_value: float | None = None
    information_fraction: float | None = None
    boundary: float | None = None
    state: SequentialState = field(default_factory=SequentialState)


@dataclass(frozen=True, slots=True)
class SrmResult(_ToDict):
    """Sample ratio mismatch check.

    Attributes
    ----------
    status : {"ok", "not_enough_data"}
    method : {"sequential", "chi_square"}
    observed : dict
        Units per variant (summed over epochs).
    expected : dict
        Expected units per variant from the weight history.
    chi_square, chi_square_p_value : float
        Pearson goodness of fit on the pooled expected counts (informative).
    p_value : float
        The p-value the decision uses: the anytime-valid p-value (non-increasing over checks)
        for ``sequential``, the chi-square p-value for ``chi_square``.
    threshold : float
        ``mismatch`` is ``p_value <= threshold``.
    mismatch : bool
    """

    status: Literal["ok", "not_enough_data"]
    message: str
    method: str
    observed: dict[str, int]
    expected: dict[str, float]
    chi_square: float
    chi_square_p_value: float
    p_value: float
    threshold: float
    mismatch: bool


@dataclass(frozen=True, slots=True)
class DriftResult(_ToDict):
    """Distribution drift of binned counts against a frozen reference.

    ``drifted`` requires both an effect size over its threshold (PSI or Jensen-Shannon distance)
    and significance of the chi-square test of homogeneity (after Benjamini-Hochberg when the
    result went through :func:`abstats.stats.flag_drift`).
    """

    status: Literal["ok", "not_enough_data"]
    message: str
    psi: float
    js_distance: float
    chi_square: float
    chi_square_p_value: float
    ks_statistic: float
    ks_p_value: float
    p_value: float
    p_value_adjusted: float
    effect_exceeded: bool
    drifted: bool


@dataclass(frozen=True, slots=True)
class GateResult(_ToDict):
    """Minimum-sample gates: no decision before all pass.

    ``status`` is ``"ok"`` when all gates pass, else ``"not_enough_data"``; ``shortfalls`` maps a
    gate (e.g. ``"units:v2"``, ``"events:v1"``, ``"runtime"``) to how much is still missing.
    """

    passed: bool
    status: Literal["ok", "not_enough_data"]
    message: str
    shortfalls: dict[str, float]
