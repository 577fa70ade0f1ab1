"""Over the simulated decision path (tests/perf/simulate_decisions.py, a few experiments here; the
full table runs in ``make bench``), no decision calls a metric better or worse with an interval
that holds zero (issue 13, item 6)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from abstats.engine.snapshot import SnapshotResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "perf"))
import simulate_decisions as sim


def _excludes_zero_on_its_side(c: dict[str, Any]) -> bool:
    lo, hi = c["ci_lower"], c["ci_upper"]
    if lo is None or hi is None:
        return False
    return lo > 0 or hi < 0


@pytest.mark.parametrize("row", ["power", "aa-drift", "aa-3gx2c"])
def test_no_reason_calls_a_metric_better_or_worse_with_zero_in_its_interval(row: str) -> None:
    seen: list[str] = []

    def check(snapshot: SnapshotResult, action: Any) -> None:
        for metric in snapshot.metrics:
            for c in metric.comparisons:
                if c.better or c.worse:
                    assert c.ci_lower is not None and c.ci_upper is not None
                    assert c.ci_lower > 0 or c.ci_upper < 0, (metric.metric, c)
        for c in action.evidence.get("comparisons", []):
            if c.get("better") or c.get("worse"):
                assert _excludes_zero_on_its_side(c), (action.reason, c)
        if action.record:
            seen.append(action.kind)

    for seed in range(6):
        sim.simulate(sim.ROWS[row], 60, 1000 + seed, on_decision=check)
    assert seen  # decisions were made and checked
