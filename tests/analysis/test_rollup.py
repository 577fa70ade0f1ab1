"""SQL rollups and aggregates equal a brute-force Python computation over the raw events, for
every metric kind, and incremental runs equal a rebuild exactly."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from abstats.analysis import aggregate
from abstats.analysis.rollup import (
    LATENCY_EDGES,
    ROLLUP_TABLES,
    SCORE_BINS,
    RollupPlan,
    clear_rollups,
    latency_bin_index,
    lock_analysis,
    roll_up,
)
from abstats.db.models import Experiment
from abstats.engine.specs import MetricSpec
from abstats.stats import BinnedScores, ClusteredHistogram, ConfusionStats, RatioStats

from .conftest import T0, Events, make_experiment, minutes, write_events

METRICS = [
    {
        "key": "conversion",
        "kind": "proportion",
        "outcome": "converted",
        "role": "primary",
        "direction": "increase",
    },
    {"key": "revenue", "kind": "mean", "outcome": "revenue"},
    {"key": "ctr", "kind": "ratio", "numerator": "clicks", "denominator": "views"},
    {"key": "accuracy", "kind": "classification", "measure": "accuracy", "label": "label"},
    {
        "key": "precision70",
        "kind": "classification",
        "measure": "precision",
        "label": "label",
        "threshold": 0.7,
    },
    {"key": "auc", "kind": "classification", "measure": "auc", "label": "label"},
    {
        "key": "latency_p95",
        "kind": "latency",
        "statistic": "p95",
        "role": "guardrail",
        "margin": "10%",
    },
    {"key": "errors", "kind": "error_rate", "role": "guardrail", "margin": 0.01},
]
EPOCH1 = T0 + minutes(60)


def generate(rng: np.random.Generator, units: int, prefix: str, offset_min: float) -> Events:
    """Exposed units, prediction-only units, mixed units (including an exact timestamp tie across
    variants), per-unit outcomes, per-request labels, missing latencies, errors."""
    ev = Events()
    for i in range(units):
        unit = f"{prefix}{i}"
        first = T0 + minutes(offset_min + float(rng.uniform(0, 120)))
        weights = (0.5, 0.5) if first < EPOCH1 else (0.2, 0.8)
        variant = "control" if rng.random() < weights[0] else "treatment"
        other = "treatment" if variant == "control" else "control"
        exposed = rng.random() < 0.8
        if exposed:
            ev.exposures.append({"variant": variant, "unit_id": unit, "ts": first})
            if rng.random() < 0.05:  # mixed: later exposed to the other variant
                ev.exposures.append({"variant": other, "unit_id": unit, "ts": first + minutes(5)})
        elif rng.random() < 0.1:  # mixed prediction-only unit with a tie at its first timestamp
            ev.predictions.append(_prediction(rng, unit, other, first))
        for k in range(int(rng.poisson(3))):
            ev.predictions.append(_prediction(rng, unit, variant, first + minutes(k + 0.5)))
        if rng.random() < 0.4:
            ev.outcomes.append(
                {
                    "unit_id": unit,
                    "name": "converted",
                    "value": float(rng.random() < 0.5),
                    "ts": first + minutes(30),
                }
            )
        for _ in range(int(rng.poisson(1))):
            ev.outcomes.append(
                {
                    "unit_id": unit,
                    "name": "revenue",
                    "value": float(rng.exponential(12.5)),
                    "ts": first + minutes(40),
                }
            )
        views = int(rng.poisson(2))
        if views:
            ev.outcomes.append(
                {"unit_id": unit, "name": "views", "value": float(views), "ts": first + minutes(1)}
            )
            ev.outcomes.append(
                {
                    "unit_id": unit,
                    "name": "clicks",
                    "value": float(rng.binomial(views, 0.3)),
                    "ts": first,
                }
            )
    for p in ev.predictions:
        if rng.random() < 0.7:
            ev.outcomes.append(
                {
                    "unit_id": p["unit_id"],
                    "request_id": p["request_id"],
                    "name": "label",
                    "value": float(rng.random() < p["score"]),
                    "ts": p["ts"] + minutes(10),
                }
            )
    return ev


def _prediction(rng: np.random.Generator, unit: str, variant: str, ts: datetime) -> dict[str, Any]:
    return {
        "variant": variant,
        "unit_id": unit,
        "request_id": uuid.uuid4().hex,
        "ts": ts,
        "score": float(rng.uniform(0, 1)),
        "latency_ms": None if rng.random() < 0.05 else float(rng.lognormal(3, 0.7)),
        "error": bool(rng.random() < 0.05),
    }


@dataclass
class UnitRef:
    variant: int
    first: tuple[datetime, int]
    exposed: bool
    variants: set[int] = field(default_factory=set)


def brute_force(experiment: Experiment, events: Events) -> dict[str, Any]:
    """Everything the SQL computes, recomputed from the raw events in plain Python."""
    vid = {v.key: v.id for v in experiment.variants}
    starts = [T0, EPOCH1]
    units: dict[str, UnitRef] = {}
    for source, exposed in ((events.exposures, True), (events.predictions, False)):
        for e in source:
            key = (e["ts"], vid[e["variant"]])
            u = units.get(e["unit_id"])
            if u is None:
                u = units[e["unit_id"]] = UnitRef(key[1], key, exposed)
            elif exposed == u.exposed and key < u.first:
                u.first, u.variant = key, key[1]
            u.variants.add(key[1])

    def cell(unit: str) -> tuple[int, int]:
        u = units[unit]
        epoch = max(sum(1 for s in starts if s <= u.first[0]), 1) - 1
        return (u.variant, epoch)

    per_unit: dict[str, dict[str, float]] = {u: defaultdict(float) for u in units}
    latency_bins: dict[str, dict[int, int]] = {u: defaultdict(int) for u in units}
    for p in events.predictions:
        d = per_unit[p["unit_id"]]
        d["requests"] += 1
        d["errors"] += p["error"]
        if p["latency_ms"] is not None:
            d["latency_n"] += 1
            d["latency_sum"] += p["latency_ms"]
            latency_bins[p["unit_id"]][latency_bin_index(p["latency_ms"])] += 1
    outcome_sum: dict[tuple[str, str], float] = defaultdict(float)
    positive: dict[tuple[str, str], bool] = defaultdict(bool)
    for o in events.outcomes:
        outcome_sum[(o["name"], o["unit_id"])] += o["value"]
        positive[(o["name"], o["unit_id"])] |= o["value"] > 0
    labels = defaultdict(list)
    for o in events.outcomes:
        if o["name"] == "label":
            labels[o["request_id"]].append(o["value"])
    confusion: dict[float, dict[str, list[float]]] = {0.5: {}, 0.7: {}}
    loss: dict[str, list[float]] = {}
    unit_scores: dict[str, tuple[list[int], list[int]]] = {}
    for p in events.predictions:
        for y in labels.get(p["request_id"], []):
            actual = y >= 0.5
            for threshold, table in confusion.items():
                predicted = p["score"] >= threshold
                c = table.setdefault(p["unit_id"], [0.0] * 4)
                c[
                    {(True, True): 0, (True, False): 1, (False, False): 2, (False, True): 3}[
                        (predicted, actual)
                    ]
                ] += 1
            s = min(max(p["score"], 1e-15), 1 - 1e-15)
            lu = loss.setdefault(p["unit_id"], [0.0, 0.0])
            lu[0] += -(math.log(s) if actual else math.log(1 - s))
            lu[1] += 1
            pos, neg = unit_scores.setdefault(p["unit_id"], ([0] * SCORE_BINS, [0] * SCORE_BINS))
            b = min(max(math.floor(p["score"] * SCORE_BINS) + 1, 1), SCORE_BINS) - 1
            (pos if actual else neg)[b] += 1

    by_cell: dict[tuple[int, int], list[str]] = defaultdict(list)
    for u in units:
        by_cell[cell(u)].append(u)
    # AUC: by the unit's variant and epoch, with the units' score moments (clustered DeLong)
    auc = {
        c: BinnedScores.from_units(
            [unit_scores[u][0] for u in members if u in unit_scores],
            [unit_scores[u][1] for u in members if u in unit_scores],
        )
        for c, members in by_cell.items()
        if any(u in unit_scores for u in members)
    }
    out: dict[str, Any] = {"cells": {}, "auc": auc}
    for c, members in by_cell.items():
        d = [per_unit[u] for u in members]
        conv = [positive[("converted", u)] for u in members]
        rev = [outcome_sum[("revenue", u)] for u in members]
        out["cells"][c] = {
            "units": len(members),
            "mixed": sum(len(units[u].variants) > 1 for u in members),
            "errors": RatioStats.from_values(
                [x["errors"] for x in d], [x["requests"] for x in d], is_proportion=True
            ),
            "latency": RatioStats.from_values(
                [x["latency_sum"] for x in d], [x["latency_n"] for x in d]
            ),
            "conversion": (len(members), sum(conv)),
            "revenue": (len(members), sum(rev), sum(r * r for r in rev)),
            "ctr": RatioStats.from_values(
                [outcome_sum[("clicks", u)] for u in members],
                [outcome_sum[("views", u)] for u in members],
            ),
            "confusion": {
                t: ConfusionStats.from_unit_counts(
                    *zip(*[table[u] for u in members if u in table], strict=True)
                )
                for t, table in confusion.items()
            },
            "log_loss": RatioStats.from_values(
                [loss[u][0] for u in members if u in loss],
                [loss[u][1] for u in members if u in loss],
            ),
            "latency_hist": ClusteredHistogram.from_unit_values(
                [
                    [
                        LATENCY_EDGES[b] * 1.0001 if b else 0.0
                        for b, n in latency_bins[u].items()
                        for _ in range(n)
                    ]
                    for u in members
                    if latency_bins[u]
                ],
                LATENCY_EDGES,
            ),
        }
    return out


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def assert_ratio(sql: RatioStats, ref: RatioStats) -> None:
    assert sql.n == ref.n
    for name in (
        "numerator_sum",
        "numerator_sum_squares",
        "denominator_sum",
        "denominator_sum_squares",
        "cross_sum",
    ):
        assert _close(getattr(sql, name), getattr(ref, name)), name


def sql_state(session: Session, experiment: Experiment) -> dict[str, Any]:
    e = experiment.id
    return {
        "units": aggregate.unit_cells(session, e),
        "conversion": aggregate.outcome_cells(session, e, "converted"),
        "revenue": aggregate.outcome_cells(session, e, "revenue"),
        "ctr": aggregate.ratio_cells(session, e, "clicks", "views"),
        "class50": aggregate.classification_cells(session, e, "label", 0.5),
        "class70": aggregate.classification_cells(session, e, "label", 0.7),
        "auc": aggregate.auc_cells(session, e, "label"),
        "latency": aggregate.latency_histograms(session, e),
    }


def run_rollup(session: Session, experiment: Experiment) -> None:
    plan = RollupPlan.from_metrics([MetricSpec.model_validate(m) for m in METRICS])
    lock_analysis(session, experiment.id)
    result = roll_up(session, experiment.id, plan, wait_seconds=1)
    assert not result.held_back_by


def rollup_rows(session: Session, experiment: Experiment) -> dict[str, list[Any]]:
    """Every rollup row (per-unit rows and cells) as text: the digits of every sum count."""
    return {
        t: [
            r[0]
            for r in session.execute(
                text(f"SELECT t::text FROM {t} t WHERE experiment_id = :e ORDER BY {order}"),
                {"e": experiment.id},
            )
        ]
        for t, order in ROLLUP_TABLES.items()
    }


@pytest.fixture
def two_batches(db_session: Session, rng: np.random.Generator) -> tuple[Experiment, Events]:
    experiment = make_experiment(
        db_session,
        metrics=METRICS,
        epochs=[(T0, {"control": 1, "treatment": 1}), (EPOCH1, {"control": 1, "treatment": 4})],
    )
    first = generate(rng, 400, "a", 0)
    write_events(db_session, experiment, first)
    run_rollup(db_session, experiment)
    # Second batch: new units; late labels and outcomes for old predictions; old units exposed
    # again, one of them *earlier* than its first exposure in the other variant (its first
    # variant changes); a prediction-only unit that now gets an exposure.
    second = generate(rng, 200, "b", 30)
    for p in first.predictions[:50]:
        second.outcomes.append(
            {
                "unit_id": p["unit_id"],
                "request_id": p["request_id"],
                "name": "label",
                "value": 1.0,
                "ts": p["ts"] + minutes(90),
            }
        )
    for exp in first.exposures[:5]:
        second.exposures.append(
            {
                "variant": "treatment" if exp["variant"] == "control" else "control",
                "unit_id": exp["unit_id"],
                "ts": exp["ts"] - minutes(1),
            }
        )
    exposed = {x["unit_id"] for x in first.exposures}
    orphan = next(p for p in first.predictions if p["unit_id"] not in exposed)
    second.exposures.append(
        {
            "variant": orphan["variant"],
            "unit_id": orphan["unit_id"],
            "ts": orphan["ts"] + minutes(3),
        }
    )
    second.outcomes.append(
        {
            "unit_id": first.exposures[0]["unit_id"],
            "name": "converted",
            "value": 1.0,
            "ts": T0 + minutes(500),
        }
    )
    write_events(db_session, experiment, second)
    run_rollup(db_session, experiment)
    union = Events(
        first.exposures + second.exposures,
        first.predictions + second.predictions,
        first.outcomes + second.outcomes,
    )
    return experiment, union


def test_sql_aggregates_equal_brute_force(db_session: Session, two_batches) -> None:
    experiment, events = two_batches
    ref = brute_force(experiment, events)
    got = sql_state(db_session, experiment)
    assert set(got["units"]) == set(ref["cells"])
    assert sum(c["mixed"] for c in ref["cells"].values()) >= 10  # mixed exposure is exercised
    assert {c[1] for c in ref["cells"]} == {0, 1}  # both epochs are exercised
    for c, r in ref["cells"].items():
        u = got["units"][c]
        assert (u.units, u.mixed) == (r["units"], r["mixed"])
        assert_ratio(u.errors, r["errors"])
        assert_ratio(u.latency, r["latency"])
        conv = got["conversion"][c].proportion
        assert (conv.n, conv.successes) == r["conversion"]
        rev = got["revenue"][c].mean
        assert rev.n == r["revenue"][0]
        assert _close(rev.sum, r["revenue"][1]) and _close(rev.sum_squares, r["revenue"][2])
        assert_ratio(got["ctr"][c][0], r["ctr"])
        for key, threshold in (("class50", 0.5), ("class70", 0.7)):
            confusion, _ = got[key][c]
            expected = r["confusion"][threshold]
            assert confusion.n == expected.n and confusion.sums == expected.sums
            assert confusion.cross_products == expected.cross_products
            assert_ratio(confusion.ratio_stats("accuracy"), expected.ratio_stats("accuracy"))
        assert_ratio(got["class50"][c][1], r["log_loss"])
        hist, ref_hist = got["latency"][c], r["latency_hist"]
        assert hist.units == ref_hist.units and hist.counts == ref_hist.counts
        assert all(
            _close(a, b)
            for a, b in zip(hist.square_increments, ref_hist.square_increments, strict=True)
        )
        assert all(
            _close(a, b)
            for a, b in zip(hist.cross_increments, ref_hist.cross_increments, strict=True)
        )
    assert got["auc"] == ref["auc"]  # bins, units and the moments' Gram sums, exactly


def test_incremental_equals_rebuild_exactly(db_session: Session, two_batches) -> None:
    experiment, _ = two_batches
    incremental_rows = rollup_rows(db_session, experiment)
    incremental = sql_state(db_session, experiment)
    clear_rollups(db_session, experiment.id)
    assert rollup_rows(db_session, experiment)["analysis_unit"] == []
    run_rollup(db_session, experiment)
    assert rollup_rows(db_session, experiment) == incremental_rows
    assert sql_state(db_session, experiment) == incremental  # every float bit-identical


def test_a_run_without_new_events_reads_nothing(db_session: Session, two_batches) -> None:
    experiment, _ = two_batches
    plan = RollupPlan.from_metrics([MetricSpec.model_validate(m) for m in METRICS])
    result = roll_up(db_session, experiment.id, plan, wait_seconds=1)
    assert not result.advanced and result.rows_read == {}
