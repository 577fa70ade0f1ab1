"""Drift checks: prediction scores, features and outcomes per variant against a frozen reference,
and variant-vs-variant feature balance (a randomisation check), on binned counts from SQL.

- Reference: frozen once, from the first ``reference_size`` predictions of the control variant
  (outcomes: the first ``reference_size`` of each metric outcome). Numeric targets get bins at the
  reference's deciles with open-ended end bins (``width_bucket`` on the inner edges) and a null bin;
  categorical targets the top-K categories, "other" and null.
- Windows: the events that arrived since the previous drift run (by id, up to the same safe
  watermark the analysis uses), once there are at least ``window_min`` of them.
- Flagged only when the effect size crosses its threshold (PSI ``psi_warn``, default 0.1; ``alert``
  at 0.25) AND the chi-square test is significant after Benjamini-Hochberg across every check of
  the window AND that held in ``consecutive`` windows in a row.

Thresholds are per experiment: ``experiment.metadata["drift"]`` may set any field of
:class:`DriftConfig`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from typing import Any, Literal

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from abstats.analysis.rollup import lock_analysis, safe_heads
from abstats.db.models import DriftReference, DriftState, Experiment
from abstats.engine.snapshot import DriftCheck
from abstats.engine.specs import MetricSpec
from abstats.errors import FieldProblem, InvalidInput
from abstats.experiments import repository
from abstats.experiments.state import experiment_spec
from abstats.logging import get_logger
from abstats.stats import DriftResult, drift_check, flag_drift

log = get_logger(__name__)


@dataclass(frozen=True)
class DriftConfig:
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    js_threshold: float = 0.2
    alpha: float = 0.05
    consecutive: int = 2
    reference_size: int = 2000
    window_min: int = 500
    top_k: int = 10
    quantile_bins: int = 10
    max_features: int = 50

    @classmethod
    def for_experiment(cls, experiment: Experiment) -> DriftConfig:
        raw = (experiment.metadata_ or {}).get("drift") or {}
        if not isinstance(raw, dict):
            raise InvalidInput(
                "metadata.drift must be an object of drift settings",
                errors=[FieldProblem("metadata.drift", "must be an object")],
            )
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        problems = []
        for name, value in raw.items():
            if name not in known:
                problems.append(
                    FieldProblem(f"metadata.drift.{name}", f"unknown; known: {', '.join(known)}")
                )
            elif not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                problems.append(FieldProblem(f"metadata.drift.{name}", "must be a positive number"))
            else:
                values[name] = int(value) if known[name] == "int" else float(value)
        if problems:
            raise InvalidInput(
                "Invalid drift settings: " + "; ".join(f"{p.field}: {p.message}" for p in problems),
                errors=problems,
            )
        return cls(**values)


@dataclass(frozen=True)
class Target:
    name: str  # 'score', 'feature:<name>', 'outcome:<name>'
    kind: str  # numeric | categorical
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def bins(self) -> int:
        # numeric: len(edges)+1 value bins + null; categorical: K + other + null
        return len(self.edges) + 2 if self.kind == "numeric" else len(self.categories) + 2

    def labels(self) -> list[str]:
        if self.kind == "numeric":
            e = [f"{x:.4g}" for x in self.edges]
            if not e:
                return ["all", "null"]
            inner = [f"[{a}, {b})" for a, b in itertools.pairwise(e)]
            return [f"< {e[0]}", *inner, f">= {e[-1]}", "null"]
        return [*self.categories, "other", "null"]


def _value_sql(target: str, kind: str, param: str) -> str:
    """SQL for the target's value in a prediction row ``p`` (an outcome row ``o`` for outcomes)."""
    if target == "score":
        return "p.score"
    if target.startswith("outcome:"):
        return "o.value"
    if kind == "numeric":
        return (
            f"CASE WHEN jsonb_typeof(p.features -> :{param}) = 'number' "
            f"THEN (p.features ->> :{param})::float8 END"
        )
    return f"(p.features ->> :{param})"


def _bin_sql(target: Target, value: str, param: str) -> str:
    if target.kind == "numeric":
        null_bin = len(target.edges) + 1
        if not target.edges:
            return f"CASE WHEN {value} IS NULL THEN 1 ELSE 0 END"
        return (
            f"CASE WHEN {value} IS NULL THEN {null_bin} "
            f"ELSE width_bucket({value}, CAST(:{param}_edges AS float8[])) END"
        )
    k = len(target.categories)
    return (
        f"CASE WHEN {value} IS NULL THEN {k + 1} "
        f"ELSE coalesce(array_position(CAST(:{param}_cats AS text[]), {value}) - 1, {k}) END"
    )


def _feature_name(target: str) -> str:
    return target.split(":", 1)[1]


def ensure_references(
    session: Session, experiment: Experiment, config: DriftConfig, metrics: list[MetricSpec]
) -> list[Target]:
    """The frozen references, built once from the first events (None yet: too few events)."""
    rows = list(
        session.scalars(
            select(DriftReference)
            .where(DriftReference.experiment_id == experiment.id)
            .order_by(DriftReference.target)
        )
    )
    if rows:
        return [
            Target(r.target, r.kind, tuple(float(x) for x in r.edges), tuple(r.categories))
            for r in rows
        ]
    control_id = next(v.id for v in experiment.variants if v.key == experiment.control_variant)
    base = {"e": experiment.id, "v": control_id, "n": config.reference_size}
    have = session.execute(
        text(
            "SELECT count(*) FROM (SELECT 1 FROM prediction WHERE experiment_id = :e "
            "AND variant_id = :v LIMIT :n) s"
        ),
        base,
    ).scalar_one()
    if have < config.reference_size:
        return []
    reference = (
        "(SELECT score, features FROM prediction WHERE experiment_id = :e AND variant_id = :v "
        "ORDER BY id LIMIT :n)"
    )
    feature_rows = session.execute(
        text(
            f"""
            SELECT f.key, count(*) FILTER (WHERE jsonb_typeof(f.value) = 'number'), count(*)
            FROM {reference} p, jsonb_each(coalesce(p.features, '{{}}'::jsonb)) f
            GROUP BY f.key ORDER BY count(*) DESC, f.key LIMIT :k
            """
        ),
        {**base, "k": config.max_features},
    ).all()
    targets: list[Target] = []
    candidates: list[tuple[str, str]] = [("score", "numeric")]
    for key, numbers, total in feature_rows:
        candidates.append((f"feature:{key}", "numeric" if numbers * 2 > total else "categorical"))
    quantiles = [i / config.quantile_bins for i in range(1, config.quantile_bins)]
    for name, kind in candidates:
        value = _value_sql(name, kind, "f")
        params = {**base, "f": _feature_name(name) if name.startswith("feature:") else ""}
        if kind == "numeric":
            edges_row = session.execute(
                text(
                    f"SELECT percentile_disc(CAST(:q AS float8[])) WITHIN GROUP (ORDER BY {value}) "
                    f"FROM {reference} p"
                ),
                {**params, "q": quantiles},
            ).scalar()
            edges = sorted({float(x) for x in (edges_row or []) if x is not None})
            targets.append(Target(name, kind, tuple(edges)))
        else:
            cats = session.execute(
                text(
                    f"SELECT v FROM (SELECT {value} AS v FROM {reference} p) s WHERE v IS NOT NULL "
                    "GROUP BY v ORDER BY count(*) DESC, v LIMIT :topk"
                ),
                {**params, "topk": config.top_k},
            ).scalars()
            targets.append(Target(name, kind, categories=tuple(str(c) for c in cats)))
    # outcomes: a baseline window of the first events of each metric outcome
    for outcome in sorted(
        {m.outcome for m in metrics if m.outcome}
        | {n for m in metrics for n in (m.numerator, m.denominator) if n}
    ):
        edges_row = session.execute(
            text(
                "SELECT percentile_disc(CAST(:q AS float8[])) WITHIN GROUP (ORDER BY value) FROM "
                "(SELECT value FROM outcome WHERE experiment_id = :e AND name = :name "
                "ORDER BY id LIMIT :n) o"
            ),
            {"e": experiment.id, "name": outcome, "n": config.reference_size, "q": quantiles},
        ).scalar()
        edges = sorted({float(x) for x in (edges_row or []) if x is not None})
        targets.append(Target(f"outcome:{outcome}", "numeric", tuple(edges)))
    # reference counts, computed on the same bins
    for target in targets:
        counts = _reference_counts(session, experiment.id, control_id, target, config)
        session.add(
            DriftReference(
                experiment_id=experiment.id,
                target=target.name,
                kind=target.kind,
                edges=list(target.edges),
                categories=list(target.categories),
                counts=counts,
                description="first outcomes (baseline window)"
                if target.name.startswith("outcome:")
                else f"first {config.reference_size} predictions of the control",
            )
        )
    session.flush()
    return targets


def _reference_counts(
    session: Session, experiment_id: int, control_id: int, target: Target, config: DriftConfig
) -> list[float]:
    params: dict[str, Any] = {
        "e": experiment_id,
        "v": control_id,
        "n": config.reference_size,
        "t_edges": list(target.edges),
        "t_cats": list(target.categories),
    }
    if target.name.startswith("outcome:"):
        params["name"] = _feature_name(target.name)
        source = (
            "(SELECT value FROM outcome WHERE experiment_id = :e AND name = :name "
            "ORDER BY id LIMIT :n) o"
        )
    else:
        params["t"] = _feature_name(target.name) if target.name.startswith("feature:") else ""
        source = (
            "(SELECT score, features FROM prediction WHERE experiment_id = :e AND variant_id = :v"
            " ORDER BY id LIMIT :n) p"
        )
    bin_sql = _bin_sql(target, _value_sql(target.name, target.kind, "t"), "t")
    counts = [0.0] * target.bins
    for b, n in session.execute(
        text(f"SELECT {bin_sql}, count(*) FROM {source} GROUP BY 1"), params
    ):
        counts[int(b)] = float(n)
    return counts


def _window_counts(
    session: Session,
    experiment_id: int,
    targets: list[Target],
    p_lo: int,
    p_hi: int,
    o_lo: int,
    o_hi: int,
) -> dict[tuple[int, str], list[float]]:
    """Counts per (variant id, target) and bin over the window, in one scan of the predictions
    (GROUPING SETS) and one query per outcome."""
    out: dict[tuple[int, str], list[float]] = {}
    prediction_targets = [t for t in targets if not t.name.startswith("outcome:")]
    if prediction_targets and p_hi > p_lo:
        params: dict[str, Any] = {"e": experiment_id, "lo": p_lo, "hi": p_hi}
        columns = []
        for i, t in enumerate(prediction_targets):
            param = f"t{i}"
            params[param] = _feature_name(t.name) if t.name.startswith("feature:") else ""
            params[f"{param}_edges"] = list(t.edges)
            params[f"{param}_cats"] = list(t.categories)
            columns.append(f"{_bin_sql(t, _value_sql(t.name, t.kind, param), param)} AS b{i}")
        sets = ", ".join(f"(variant_id, b{i})" for i in range(len(prediction_targets)))
        sql = f"""
            SELECT variant_id, {", ".join(f"b{i}" for i in range(len(prediction_targets)))}, count(*)
            FROM (SELECT p.variant_id, {", ".join(columns)} FROM prediction p
                  WHERE p.experiment_id = :e AND p.id > :lo AND p.id <= :hi) s
            GROUP BY GROUPING SETS ({sets})
        """
        for row in session.execute(text(sql), params):
            vid, bins, n = int(row[0]), row[1:-1], float(row[-1])
            for i, b in enumerate(bins):
                if b is not None:
                    t = prediction_targets[i]
                    out.setdefault((vid, t.name), [0.0] * t.bins)[int(b)] += n
                    break
    for t in targets:
        if not t.name.startswith("outcome:") or o_hi <= o_lo:
            continue
        bin_sql = _bin_sql(t, "o.value", "t")
        rows = session.execute(
            text(
                f"""
                SELECT u.variant_id, {bin_sql}, count(*) FROM outcome o
                JOIN analysis_unit u ON u.experiment_id = o.experiment_id AND u.unit_id = o.unit_id
                WHERE o.experiment_id = :e AND o.name = :name AND o.id > :lo AND o.id <= :hi
                GROUP BY 1, 2
                """
            ),
            {
                "e": experiment_id,
                "name": _feature_name(t.name),
                "lo": o_lo,
                "hi": o_hi,
                "t_edges": list(t.edges),
                "t_cats": list(t.categories),
            },
        )
        for vid, b, n in rows:
            out.setdefault((int(vid), t.name), [0.0] * t.bins)[int(b)] += float(n)
    return out


def run_drift(
    session: Session,
    experiment_key: str,
    *,
    config: DriftConfig | None = None,
    wait_seconds: float = 5.0,
) -> list[DriftCheck]:
    """Check the window of events since the previous drift run; returns the checks of this
    window (empty when the reference or the window is not complete yet)."""
    experiment = repository.get_experiment(session, experiment_key)
    config = config or DriftConfig.for_experiment(experiment)
    metrics = list(experiment_spec(experiment).metrics)
    lock_analysis(session, experiment.id)
    heads, blocking = safe_heads(session, experiment.id, wait_seconds=wait_seconds)
    if heads is None:
        log.warning("drift.held_back", experiment=experiment.key, blocking_pids=blocking)
        return []
    had_reference = session.execute(
        select(DriftReference.id).where(DriftReference.experiment_id == experiment.id).limit(1)
    ).first()
    targets = ensure_references(session, experiment, config, metrics)
    if not targets:
        return []
    if had_reference is None:
        # the events so far are the reference window: the first window starts after them
        _save_drift_watermark(session, experiment.id, heads[1], heads[2])
        return []
    mark = session.execute(
        text(
            "SELECT drift_prediction_id, drift_outcome_id FROM analysis_watermark "
            "WHERE experiment_id = :e"
        ),
        {"e": experiment.id},
    ).first()
    p_lo, o_lo = (int(mark[0]), int(mark[1])) if mark else (0, 0)
    p_hi, o_hi = max(heads[1], p_lo), max(heads[2], o_lo)
    window = session.execute(
        text("SELECT count(*) FROM prediction WHERE experiment_id = :e AND id > :lo AND id <= :hi"),
        {"e": experiment.id, "lo": p_lo, "hi": p_hi},
    ).scalar_one()
    if window < config.window_min:
        return []
    counts = _window_counts(session, experiment.id, targets, p_lo, p_hi, o_lo, o_hi)
    references = {
        r.target: (r.counts, r.description)
        for r in session.scalars(
            select(DriftReference).where(DriftReference.experiment_id == experiment.id)
        )
    }
    key_of = {v.id: v.key for v in experiment.variants}
    control_id = next(v.id for v in experiment.variants if v.key == experiment.control_variant)
    checks: list[tuple[str, Target, str, list[float], list[float]]] = []
    for t in targets:
        ref_counts, description = references[t.name]
        for vid, variant in key_of.items():
            current = counts.get((vid, t.name))
            if current is not None and sum(current) > 0:
                checks.append((variant, t, description, list(ref_counts), current))
        if t.name.startswith("feature:"):  # balance: each treatment against the control
            control_counts = counts.get((control_id, t.name))
            for vid, variant in key_of.items():
                current = counts.get((vid, t.name))
                if vid != control_id and control_counts and current and sum(current) > 0:
                    checks.append((variant, t, "control (same window)", control_counts, current))
    results: list[DriftResult] = [
        drift_check(
            ref,
            cur,
            psi_threshold=config.psi_warn,
            js_threshold=config.js_threshold,
            alpha=config.alpha,
        )
        for _, _, _, ref, cur in checks
    ]
    adjusted = flag_drift(results, alpha=config.alpha) if results else []
    # every state of the experiment in one query (the identity map then answers session.get)
    list(session.scalars(select(DriftState).where(DriftState.experiment_id == experiment.id)))
    out: list[DriftCheck] = []
    for (variant, t, description, ref, cur), result in zip(checks, adjusted, strict=True):
        state_target = t.name if description != "control (same window)" else f"balance:{t.name}"
        state = session.get(DriftState, (experiment.id, variant, state_target))
        if state is None:
            state = DriftState(
                experiment_id=experiment.id,
                variant=variant,
                target=state_target,
                consecutive=0,
                windows=0,
                last_result={},
            )
            session.add(state)
        drifted = bool(result.drifted)
        state.consecutive = (state.consecutive or 0) + 1 if drifted else 0
        state.windows = (state.windows or 0) + 1
        psi_value = _finite(result.psi)
        level: Literal["ok", "warn", "alert"] = "ok"
        if drifted and psi_value is not None:
            level = "alert" if psi_value >= config.psi_alert else "warn"
        elif drifted:
            level = "warn"
        check = DriftCheck(
            variant=variant,
            target=state_target,
            reference=description,
            psi=psi_value,
            js_distance=_finite(result.js_distance),
            p_value=_finite(result.p_value),
            p_value_adjusted=_finite(result.p_value_adjusted),
            level=level,
            flagged=drifted and state.consecutive >= config.consecutive,
            consecutive_windows=state.consecutive,
            reference_counts=ref,
            current_counts=cur,
            bin_labels=t.labels(),
        )
        state.last_result = check.model_dump(mode="json")
        out.append(check)
    _save_drift_watermark(session, experiment.id, p_hi, o_hi)
    log.info(
        "drift.window",
        experiment=experiment.key,
        checks=len(out),
        flagged=sum(c.flagged for c in out),
        window=window,
    )
    return out


def _save_drift_watermark(
    session: Session, experiment_id: int, prediction_id: int, outcome_id: int
) -> None:
    session.execute(
        text(
            """
            INSERT INTO analysis_watermark AS w
              (experiment_id, exposure_id, prediction_id, outcome_id, drift_prediction_id,
               drift_outcome_id, updated_at)
            VALUES (:e, 0, 0, 0, :p, :o, now())
            ON CONFLICT (experiment_id) DO UPDATE SET
              drift_prediction_id = excluded.drift_prediction_id,
              drift_outcome_id = excluded.drift_outcome_id
            """
        ),
        {"e": experiment_id, "p": prediction_id, "o": outcome_id},
    )
    session.flush()


def _finite(value: float | None) -> float | None:
    import math

    if value is None or not math.isfinite(value):
        return None
    return float(value)
