"""``GET /v1/experiments/{key}/analysis/latest`` and ``GET /v1/experiments/{key}/analysis``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from abstats.analysis.service import latest_snapshot, list_snapshots
from abstats.db.models import AnalysisSnapshot
from abstats.deps import ReadKey, SessionDep
from abstats.errors import NotFound
from abstats.experiments import repository

router = APIRouter(prefix="/v1/experiments/{key}/analysis", tags=["analysis"])


def snapshot_read(snapshot: AnalysisSnapshot) -> dict[str, Any]:
    """The public form of a snapshot (also used by the pipeline endpoint)."""
    return {
        "id": snapshot.id,
        "cutoff": snapshot.cutoff,
        "created_at": snapshot.created_at,
        "weight_epoch": snapshot.weight_epoch,
        "watermark": snapshot.watermark,
        "recommendation": snapshot.recommendation,
        "result": snapshot.result,
    }


@router.get("/latest")
def get_latest_snapshot(key: str, session: SessionDep, _: ReadKey) -> dict[str, Any]:
    experiment = repository.get_experiment(session, key)
    snapshot = latest_snapshot(session, experiment.id)
    if snapshot is None:
        raise NotFound(
            f"Experiment {key!r} has no analysis yet: the scheduler analyses running experiments "
            f"every few minutes, or run one now with POST /v1/experiments/{key}/analysis."
        )
    return snapshot_read(snapshot)


@router.get("")
def list_analysis_snapshots(
    key: str,
    session: SessionDep,
    _: ReadKey,
    limit: int = Query(20, ge=1, le=500, description="Newest first; at most 500."),
) -> dict[str, Any]:
    experiment = repository.get_experiment(session, key)
    return {"data": [snapshot_read(s) for s in list_snapshots(session, experiment.id, limit=limit)]}
