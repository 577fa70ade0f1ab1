"""Per-experiment Prometheus series, read from the database when ``/metrics`` is scraped.

Why a collector that reads PostgreSQL at scrape time rather than gauges the scheduler sets: the
scheduler is a leader-elected process with no HTTP port, and the API runs as several stateless
replicas. Gauges set in the scheduler would live only in the leader's memory (gone, or frozen at
old values in a standby, after a failover), and gauges set in one API replica would disagree with
the others behind a load balancer. The database is the one place every process agrees on, so any
replica answers a scrape with the same values, and a value is never older than the latest
snapshot.

Cost per scrape: two statements, whatever the number of experiments (no N+1). The first reads the
active experiments (``running`` and ``paused``: SRM and router failures pause an experiment, and
their alerts must still see it) up to ``ABSTATS_METRICS_MAX_EXPERIMENTS``, most recently started
first, each with its current weight epoch, its latest snapshot (without the bulky drift histograms
and sequential state) and its decision counts, through ``LATERAL`` joins on the existing
``(experiment_id, ...)`` indexes. The second counts experiments by status, pending outbox items
(partial index ``ix_outbox_pending``) and router failures. Label values are experiment, variant
and metric keys of active experiments only, so cardinality is bounded by the cap times the
variants and metrics of an experiment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
from pydantic import ValidationError
from sqlalchemy import Engine, text

from abstats.engine.snapshot import SnapshotResult
from abstats.logging import get_logger

_log = get_logger(__name__)

ACTIVE_STATUSES = ("running", "paused")

_EXPERIMENTS_SQL = text(
    """
    SELECT e.key, e.status, w.weights, s.result, s.created_at AS analysed_at,
           extract(epoch FROM now() - s.created_at) AS analysis_age, d.actions
    FROM experiment e
    LEFT JOIN LATERAL (
        SELECT weights FROM weight_epoch
        WHERE experiment_id = e.id ORDER BY epoch DESC LIMIT 1
    ) w ON true
    LEFT JOIN LATERAL (
        SELECT result - 'drift' - 'sequential_state' AS result, created_at
        FROM analysis_snapshot
        WHERE experiment_id = e.id ORDER BY created_at DESC, id DESC LIMIT 1
    ) s ON true
    LEFT JOIN LATERAL (
        SELECT jsonb_agg(jsonb_build_array(action, applied, n)) AS actions
        FROM (
            SELECT action, applied, count(*) AS n FROM decision
            WHERE experiment_id = e.id GROUP BY action, applied
        ) counted
    ) d ON true
    WHERE e.status IN ('running', 'paused')
    ORDER BY e.started_at DESC NULLS LAST, e.id DESC
    LIMIT :cap
    """
)

_SERVICE_SQL = text(
    """
    SELECT
      (SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb)
         FROM (SELECT status, count(*) AS n FROM experiment GROUP BY status) by_status
      ) AS statuses,
      (SELECT coalesce(jsonb_object_agg(kind, jsonb_build_array(n, retrying, age)), '{}'::jsonb)
         FROM (SELECT kind, count(*) AS n, count(*) FILTER (WHERE attempts > 0) AS retrying,
                      extract(epoch FROM now() - min(created_at)) AS age
               FROM outbox WHERE done_at IS NULL GROUP BY kind) pending
      ) AS outbox,
      (SELECT count(*) FROM decision WHERE evidence->>'trigger' = 'router_failure')
        AS router_failures
    """
)


@dataclass(frozen=True)
class ExperimentRow:
    key: str
    status: str
    weights: dict[str, Any] | None
    snapshot: SnapshotResult | None
    analysed_at: datetime | None
    analysis_age: float | None
    decisions: list[tuple[str, bool, int]]


@dataclass(frozen=True)
class ServiceRow:
    statuses: dict[str, int]
    outbox: dict[str, tuple[int, int, float]]
    router_failures: int


def read_experiments(engine: Engine, *, cap: int) -> list[ExperimentRow]:
    """The active experiments (at most ``cap``) with what their series are made of."""
    with engine.connect() as conn:
        rows = conn.execute(_EXPERIMENTS_SQL, {"cap": cap}).mappings().all()
    out = []
    for row in rows:
        snapshot = None
        if row["result"] is not None:
            try:
                snapshot = SnapshotResult.model_validate(row["result"])
            except ValidationError:  # an old snapshot shape: weights and decisions still count
                _log.warning("metrics.snapshot_unreadable", experiment=row["key"])
        out.append(
            ExperimentRow(
                key=row["key"],
                status=row["status"],
                weights=row["weights"],
                snapshot=snapshot,
                analysed_at=row["analysed_at"],
                analysis_age=None if row["analysis_age"] is None else float(row["analysis_age"]),
                decisions=[(str(a), bool(ap), int(n)) for a, ap, n in row["actions"] or []],
            )
        )
    return out


def read_service(engine: Engine) -> ServiceRow:
    with engine.connect() as conn:
        row = conn.execute(_SERVICE_SQL).mappings().one()
    return ServiceRow(
        statuses={k: int(v) for k, v in row["statuses"].items()},
        outbox={k: (int(n), int(r), float(a)) for k, (n, r, a) in row["outbox"].items()},
        router_failures=int(row["router_failures"]),
    )


def _effect(comparison: Any) -> float | None:
    value = (
        comparison.relative_effect
        if comparison.ci_scale == "relative"
        else comparison.absolute_effect
    )
    return None if value is None else float(value)


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)


class ExperimentCollector(Collector):
    """Yields the per-experiment and service series on every scrape (see the module docstring).

    A database failure yields ``abstats_experiment_metrics_up 0`` instead of failing the scrape,
    so the process's own series (HTTP, ingest) still reach Prometheus during an outage."""

    def __init__(self, engine: Callable[[], Engine], *, cap: Callable[[], int]) -> None:
        self._engine = engine
        self._cap = cap

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no collection at registration time (no database then)

    def collect(self) -> Iterator[Metric]:
        try:
            engine = self._engine()
            experiments = read_experiments(engine, cap=self._cap())
            service = read_service(engine)
        except Exception as exc:  # never fail the whole scrape
            _log.warning("metrics.collect_failed", error=f"{type(exc).__name__}: {exc}")
            up = GaugeMetricFamily(
                "abstats_experiment_metrics_up",
                "1 when the per-experiment series could be read from the database",
            )
            up.add_metric([], 0.0)
            yield up
            return
        yield from build_families(experiments, service)


def build_families(experiments: list[ExperimentRow], service: ServiceRow) -> Iterator[Metric]:
    g = GaugeMetricFamily
    up = g(
        "abstats_experiment_metrics_up",
        "1 when the per-experiment series could be read from the database",
    )
    up.add_metric([], 1.0)
    status = g("abstats_experiments", "Experiments by status", labels=["status"])
    for name, count in sorted(service.statuses.items()):
        status.add_metric([name], float(count))
    active = sum(service.statuses.get(s, 0) for s in ACTIVE_STATUSES)
    omitted = g(
        "abstats_experiment_metrics_omitted",
        "Active experiments left out of the per-experiment series by ABSTATS_METRICS_MAX_EXPERIMENTS",
    )
    omitted.add_metric([], float(max(active - len(experiments), 0)))
    outbox_pending = g(
        "abstats_outbox_pending", "Outbox items not yet delivered, by kind", labels=["kind"]
    )
    outbox_retrying = g(
        "abstats_outbox_retrying",
        "Outbox items not yet delivered that failed at least once, by kind",
        labels=["kind"],
    )
    outbox_age = g(
        "abstats_outbox_oldest_pending_age_seconds",
        "Age of the oldest undelivered outbox item, by kind",
        labels=["kind"],
    )
    for kind in ("router", "notify"):
        n, retrying, oldest = service.outbox.get(kind, (0, 0, 0.0))
        outbox_pending.add_metric([kind], float(n))
        outbox_retrying.add_metric([kind], float(retrying))
        outbox_age.add_metric([kind], oldest)
    router_failures = CounterMetricFamily(
        "abstats_router_failures",
        "Router calls given up on (the experiment was paused or the failure recorded)",
    )
    router_failures.add_metric([], float(service.router_failures))

    e = ["experiment"]
    ev = ["experiment", "variant"]
    emv = ["experiment", "metric", "role", "variant"]
    running = g("abstats_experiment_running", "1 running, 0 paused", labels=e)
    weight = g(
        "abstats_experiment_variant_weight",
        "Current traffic share of each variant (0-1), from the latest weight epoch",
        labels=ev,
    )
    units = g(
        "abstats_experiment_variant_units", "Units per variant at the latest analysis", labels=ev
    )
    events = g(
        "abstats_experiment_variant_events",
        "Events a metric counts per variant at the latest analysis",
        labels=["experiment", "metric", "variant"],
    )
    effect = g(
        "abstats_experiment_effect",
        "Effect of a variant against the control (relative, or absolute on an absolute margin: "
        "see the scale label)",
        labels=[*emv, "scale"],
    )
    lower = g(
        "abstats_experiment_effect_lower",
        "Lower interval bound of the effect",
        labels=[*emv, "scale"],
    )
    upper = g(
        "abstats_experiment_effect_upper",
        "Upper interval bound of the effect",
        labels=[*emv, "scale"],
    )
    p_value = g("abstats_experiment_p_value", "p-value of the comparison", labels=emv)
    p_adjusted = g(
        "abstats_experiment_p_value_adjusted",
        "p-value a decision rests on: Holm-adjusted across treatments and primaries, or the "
        "comparison's own where nothing was adjusted",
        labels=emv,
    )
    worse = g(
        "abstats_experiment_metric_worse",
        "1 when the variant is significantly worse than the control on the metric",
        labels=emv,
    )
    better = g(
        "abstats_experiment_metric_better",
        "1 when the variant is significantly better than the control on the metric",
        labels=emv,
    )
    non_inferior = g(
        "abstats_experiment_guardrail_non_inferior",
        "Guardrails: 1 when proven not worse than the margin",
        labels=emv,
    )
    srm_p = g("abstats_experiment_srm_p_value", "Sample ratio mismatch test p-value", labels=e)
    srm_flag = g(
        "abstats_experiment_srm_flagged", "1 when sample ratio mismatch is flagged", labels=e
    )
    analysed = g(
        "abstats_experiment_last_analysis_timestamp_seconds",
        "When the latest analysis snapshot was made (Unix time)",
        labels=e,
    )
    age = g(
        "abstats_experiment_last_analysis_age_seconds",
        "Seconds since the latest analysis snapshot (database clock)",
        labels=e,
    )
    decisions = CounterMetricFamily(
        "abstats_experiment_decisions",
        "Decisions recorded, by action and whether they were applied",
        labels=["experiment", "action", "applied"],
    )

    def put(family: GaugeMetricFamily, labels: list[str], value: float | None) -> None:
        if value is not None:
            family.add_metric(labels, value)

    for row in experiments:
        running.add_metric([row.key], 1.0 if row.status == "running" else 0.0)
        total = sum(float(v) for v in (row.weights or {}).values())
        for variant, w in sorted((row.weights or {}).items()):
            weight.add_metric([row.key, variant], float(w) / total if total > 0 else 0.0)
        for action, applied, n in row.decisions:
            decisions.add_metric([row.key, action, str(applied).lower()], float(n))
        if row.analysed_at is not None:
            analysed.add_metric([row.key], row.analysed_at.timestamp())
            put(age, [row.key], row.analysis_age)
        snap = row.snapshot
        if snap is None:
            continue
        for variant, n in sorted(snap.units.items()):
            units.add_metric([row.key, variant], float(n))
        if snap.srm is not None:
            put(srm_p, [row.key], snap.srm.p_value)
            srm_flag.add_metric([row.key], float(snap.srm.flagged))
        for metric in snap.metrics:
            for variant, value in sorted(metric.variants.items()):
                events.add_metric([row.key, metric.metric, variant], float(value.events))
            for c in metric.comparisons:
                labels = [row.key, metric.metric, metric.role, c.variant]
                scaled = [*labels, c.ci_scale]
                put(effect, scaled, _effect(c))
                put(lower, scaled, c.ci_lower)
                put(upper, scaled, c.ci_upper)
                put(p_value, labels, c.p_value)
                put(p_adjusted, labels, c.decision_p_value)
                put(worse, labels, _flag(c.worse))
                put(better, labels, _flag(c.better))
                put(non_inferior, labels, _flag(c.non_inferior))

    yield from (
        up, status, omitted, outbox_pending, outbox_retrying, outbox_age, router_failures,
        running, weight, units, events, effect, lower, upper, p_value, p_adjusted, worse,
        better, non_inferior, srm_p, srm_flag, analysed, age, decisions,
    )  # fmt: skip


_installed: ExperimentCollector | None = None


def install(
    engine: Callable[[], Engine],
    *,
    cap: Callable[[], int],
    registry: CollectorRegistry = REGISTRY,
) -> ExperimentCollector:
    """Register the collector once per process (``create_app`` may run several times)."""
    global _installed
    if _installed is None:
        _installed = ExperimentCollector(engine, cap=cap)
        registry.register(_installed)
    return _installed
