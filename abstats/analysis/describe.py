"""Words for numbers: how effects, p-values and counts read in snapshot and decision reasons.

One place, so a recommendation's reason ("``v2 f1 +4.1% [+1.2%, +7.0%]``") and a decision's
reason say the same thing the same way. Pure (no I/O).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from abstats.analysis.snapshot import Comparison


def pct(x: float) -> str:
    """``+4.1%``; beyond +-1000% (a control near 0) the digits stop meaning anything."""
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    if abs(x) > 10:
        return ">+1000%" if x > 0 else "<-1000%"
    return f"{x * 100:+.1f}%"


def num(x: float) -> str:
    """A signed number with 4 significant digits: ``+0.0123``."""
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return f"{x:+.4g}"


def p_value(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    if p < 0.001:
        return f"{p:.1e}"
    return f"{p:.3g}"


def counts(values: Mapping[str, float], digits: int = 0) -> str:
    """``v1 5,012, v2 4,988`` (a mapping in its own order)."""
    return ", ".join(f"{k} {v:,.{digits}f}" for k, v in values.items())


def effect(c: Comparison) -> str:
    """``+4.1% [+1.2%, +7.0%]`` (relative) or ``+0.012 [+0.003, +0.021]`` (absolute)."""
    fmt = pct if c.ci_scale == "relative" else num
    value = c.relative_effect if c.ci_scale == "relative" else c.absolute_effect
    if value is None:
        return "effect n/a"
    text = fmt(value)
    if c.ci_lower is not None and c.ci_upper is not None:
        text += f" [{fmt(c.ci_lower)}, {fmt(c.ci_upper)}]"
    return text
