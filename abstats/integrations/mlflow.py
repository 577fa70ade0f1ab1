"""MLflow Model Registry and tracking (optional extra ``abstats[mlflow]``: ``mlflow-skinny``).

A variant's ``model_version`` may name a registered model version, ``models:/churn/3``, or an
alias, ``models:/churn@challenger``. For an experiment with ``integrations.mlflow``:

- start: every such variant is resolved to the exact version and its training run, recorded on
  the variant's metadata as ``{"mlflow": {"uri", "name", "version", "run_id", "resolved_at"}}``
  (an alias that moves later does not change what the experiment tested);
- promotion: ``promote_alias`` (e.g. ``champion``) is set on the winner's version, and every
  variant's version gets the tags ``abstats.experiment``, ``abstats.verdict`` (``winner`` /
  ``loser``, ``rolled_back`` / ``kept`` after a rollback) and ``abstats.reason``;
- analysis (``log_analyses``): each snapshot's effects, intervals, p-values, SRM p-value, units
  and recommendation are logged to one MLflow run per experiment (experiment
  ``abstats/<key>``, found again by its tag ``abstats.experiment``), step = snapshot id.

Nothing here runs inside a decision's transaction: the decision enqueues an ``mlflow`` outbox
item, and ``abstats.control.outbox`` calls :func:`deliver` after the commit, with retries.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from abstats.db.models import AnalysisSnapshot, Decision, Experiment, OutboxItem
from abstats.engine.snapshot import SnapshotResult
from abstats.errors import AbstatsError
from abstats.experiments.integrations import MlflowIntegration

if TYPE_CHECKING:
    from mlflow import MlflowClient

OUTBOX_KIND = "mlflow"
EXPERIMENT_TAG = "abstats.experiment"
MODEL_URI = re.compile(
    r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[0-9]+)|@(?P<alias>[A-Za-z0-9_-]+))$"
)
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
_TAG_LIMIT = 5000  # MLflow's tag value limit (older servers: 5000 characters)


class MlflowError(AbstatsError):
    """The MLflow integration cannot run (not installed, no tracking URI, unknown model)."""

    status = 502
    title = "MLflow integration failed"
    type_slug = "mlflow-failed"


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str | None
    alias: str | None


def parse_model_uri(text: str) -> ModelRef | None:
    """``models:/name/3`` or ``models:/name@alias``; None for any other model_version."""
    found = MODEL_URI.match(text.strip())
    if found is None:
        return None
    return ModelRef(found["name"], found["version"], found["alias"])


def config_of(experiment: Experiment) -> MlflowIntegration | None:
    raw = (experiment.integrations or {}).get("mlflow")
    return None if raw is None else MlflowIntegration.model_validate(raw)


def available() -> bool:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return False
    return True


def client_for(config: MlflowIntegration) -> MlflowClient:
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise MlflowError(
            "The experiment has integrations.mlflow but MLflow's client is not installed: "
            "pip install 'abstats[mlflow]'."
        ) from None
    uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise MlflowError(
            "No MLflow server: set integrations.mlflow.tracking_uri or MLFLOW_TRACKING_URI."
        )
    # The outbox retries with its own backoff; MLflow's default (7 retries, exponential, minutes
    # in all) would hold the outbox item's transaction that long. Explicit settings win.
    for name, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def enqueue_analysis_log(session: Session, experiment: Experiment, snapshot_id: int) -> None:
    """Ask for the snapshot to be logged to MLflow after the caller's transaction commits (only
    with ``integrations.mlflow.log_analyses``). Start, promotion and rollback are enqueued by
    ``abstats.experiments.state.change_state`` with the decision."""
    config = config_of(experiment)
    if config is None or not config.log_analyses:
        return
    session.add(
        OutboxItem(
            experiment_id=experiment.id,
            kind=OUTBOX_KIND,
            payload={"op": "log_analysis", "snapshot_id": snapshot_id},
        )
    )


def deliver(session: Session, item: OutboxItem) -> None:
    """Carry out one ``mlflow`` outbox item (raises on failure: the outbox retries)."""
    experiment = session.get(Experiment, item.experiment_id)
    config = config_of(experiment) if experiment is not None else None
    if experiment is None or config is None:
        return
    client = client_for(config)
    op = item.payload.get("op")
    if op == "resolve":
        resolve_variants(client, experiment)
    elif op == "verdict":
        decision = session.get(Decision, item.decision_id) if item.decision_id else None
        if decision is not None:
            resolve_variants(client, experiment)  # a start before the integration was set
            record_verdict(client, config, experiment, decision)
    elif op == "log_analysis":
        snapshot = session.get(AnalysisSnapshot, item.payload.get("snapshot_id"))
        if snapshot is not None:
            actions = session.scalars(
                select(Decision.action)
                .where(Decision.snapshot_id == snapshot.id)
                .order_by(Decision.id)
            ).all()
            log_analysis(client, config, experiment, snapshot, decisions=list(actions))
    else:
        raise MlflowError(f"unknown mlflow outbox operation {op!r}")


def resolve_variants(client: MlflowClient, experiment: Experiment) -> None:
    """Record the exact version and run of each variant that names a registered model (once)."""
    for variant in experiment.variants:
        ref = parse_model_uri(variant.model_version)
        if ref is None or "mlflow" in (variant.metadata_ or {}):
            continue
        if ref.alias is not None:
            version = client.get_model_version_by_alias(ref.name, ref.alias)
        else:
            version = client.get_model_version(ref.name, str(ref.version))
        variant.metadata_ = {
            **(variant.metadata_ or {}),
            "mlflow": {
                "uri": variant.model_version,
                "name": ref.name,
                "version": str(version.version),
                "run_id": version.run_id,
                "source": version.source,
                "resolved_at": datetime.now(UTC).isoformat(),
            },
        }


def _recorded(experiment: Experiment) -> dict[str, dict[str, Any]]:
    return {
        v.key: v.metadata_["mlflow"]
        for v in experiment.variants
        if isinstance((v.metadata_ or {}).get("mlflow"), dict)
    }


def record_verdict(
    client: MlflowClient, config: MlflowIntegration, experiment: Experiment, decision: Decision
) -> None:
    """Promotion: the alias on the winner, verdict tags on every variant's version. Rollback:
    tags only (the control keeps whatever alias it has)."""
    models = _recorded(experiment)
    if decision.action == "promote":
        winner = experiment.winner_variant
        verdicts = {key: ("winner" if key == winner else "loser") for key in models}
        if config.promote_alias and winner in models:
            model = models[winner]
            client.set_registered_model_alias(model["name"], config.promote_alias, model["version"])
    elif decision.action == "rollback":
        control = experiment.control_variant
        verdicts = {key: ("kept" if key == control else "rolled_back") for key in models}
    else:
        return
    if config.log_analyses:
        run_id = experiment_run(client, config, experiment.key)
        client.set_tag(run_id, "abstats.decision", decision.action)
        client.set_tag(run_id, "abstats.verdict", (decision.reason or "")[:_TAG_LIMIT])
        if experiment.winner_variant:
            client.set_tag(run_id, "abstats.winner", experiment.winner_variant)
    for key, verdict in verdicts.items():
        model = models[key]
        tags = {
            EXPERIMENT_TAG: experiment.key,
            "abstats.variant": key,
            "abstats.verdict": verdict,
            "abstats.reason": (decision.reason or "")[:_TAG_LIMIT],
            "abstats.decision_id": str(decision.id),
        }
        for name, value in tags.items():
            client.set_model_version_tag(model["name"], model["version"], name, value)


def _metric_key(*parts: str) -> str:
    """MLflow metric names allow letters, digits, _ - . space : /; anything else becomes _."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", ".".join(parts))


def analysis_metrics(result: SnapshotResult) -> dict[str, float]:
    """The numbers of a snapshot as MLflow metrics: ``<metric>.<variant>.effect`` and its
    ``ci_lower``/``ci_upper``/``p_value``/``p_value_adjusted``, ``units.<variant>``,
    ``weight.<variant>``, ``srm.p_value``."""
    out: dict[str, float] = {}
    for variant, n in result.units.items():
        out[_metric_key("units", variant)] = float(n)
    total = sum(result.weights.values())
    for variant, w in result.weights.items():
        out[_metric_key("weight", variant)] = w / total if total > 0 else 0.0
    if result.srm is not None and result.srm.p_value is not None:
        out["srm.p_value"] = result.srm.p_value
    for metric in result.metrics:
        for variant, value in metric.variants.items():
            if value.value is not None:
                out[_metric_key(metric.metric, variant, "value")] = value.value
        for c in metric.comparisons:
            effect = c.relative_effect if c.ci_scale == "relative" else c.absolute_effect
            for name, number in (
                ("effect", effect),
                ("ci_lower", c.ci_lower),
                ("ci_upper", c.ci_upper),
                ("p_value", c.p_value),
                ("p_value_adjusted", c.decision_p_value),
            ):
                if number is not None:
                    out[_metric_key(metric.metric, c.variant, name)] = float(number)
    return out


def experiment_run(client: MlflowClient, config: MlflowIntegration, key: str) -> str:
    """The id of the experiment's MLflow run (created on first use)."""
    name = config.experiment_name or f"abstats/{key}"
    found = client.get_experiment_by_name(name)
    mlflow_experiment_id = found.experiment_id if found else client.create_experiment(name)
    runs = client.search_runs(
        [mlflow_experiment_id], filter_string=f"tags.`{EXPERIMENT_TAG}` = '{key}'", max_results=1
    )
    if runs:
        return str(runs[0].info.run_id)
    run = client.create_run(mlflow_experiment_id, run_name=key, tags={EXPERIMENT_TAG: key})
    return str(run.info.run_id)


def log_analysis(
    client: MlflowClient,
    config: MlflowIntegration,
    experiment: Experiment,
    row: AnalysisSnapshot,
    *,
    decisions: list[str],
) -> None:
    from mlflow.entities import Metric, Param, RunTag

    result = SnapshotResult.model_validate(row.result)
    run_id = experiment_run(client, config, experiment.key)
    at = int(row.created_at.timestamp() * 1000)
    metrics = [
        Metric(key, value, at, row.id) for key, value in sorted(analysis_metrics(result).items())
    ]
    tags = [
        RunTag("abstats.recommendation", result.recommendation[:_TAG_LIMIT]),
        RunTag("abstats.reason", result.reason[:_TAG_LIMIT]),
        RunTag("abstats.status", experiment.status),
        RunTag("abstats.snapshot_id", str(row.id)),
        RunTag("abstats.cutoff", result.cutoff.isoformat()),
    ]
    if decisions:
        tags.append(RunTag("abstats.decision", ", ".join(decisions)))
    if experiment.winner_variant:
        tags.append(RunTag("abstats.winner", experiment.winner_variant))
    params = [
        Param(f"model.{key}", f"{model['name']}/{model['version']}")
        for key, model in sorted(_recorded(experiment).items())
    ]
    existing = client.get_run(run_id).data.params
    params = [p for p in params if p.key not in existing]  # params are write-once in MLflow
    for start in range(0, len(metrics), 900):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=metrics[start : start + 900])
    client.log_batch(run_id, params=params, tags=tags)
