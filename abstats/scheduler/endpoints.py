"""``POST /v1/experiments/{key}/analysis``: run the scheduler's pipeline now (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from abstats.analysis.endpoints import snapshot_read
from abstats.db.models import Decision
from abstats.deps import AdminKey, SessionDep
from abstats.scheduler.pipeline import run_pipeline

router = APIRouter(prefix="/v1/experiments/{key}", tags=["analysis"])


def decision_read(decision: Decision) -> dict[str, Any]:
    return {
        "id": decision.id,
        "action": decision.action,
        "actor": decision.actor,
        "reason": decision.reason,
        "applied": decision.applied,
        "status_before": decision.status_before,
        "status_after": decision.status_after,
        "weights_before": decision.weights_before,
        "weights_after": decision.weights_after,
        "snapshot_id": decision.snapshot_id,
        "evidence": decision.evidence,
        "created_at": decision.created_at,
    }


@router.post("/analysis")
async def run_analysis_now(key: str, session: SessionDep, _: AdminKey) -> dict[str, Any]:
    """Analysis, then the policy's decision step, then reports; each commits on its own (the
    pipeline's transactions, not this request's session)."""
    # end the request's own transaction (auth) first: the pipeline must not wait on it
    session.commit()
    result = await run_in_threadpool(run_pipeline, key)
    return {
        "snapshot": snapshot_read(result.snapshot),
        "created": result.created,
        "decisions": [decision_read(d) for d in result.decisions],
    }
