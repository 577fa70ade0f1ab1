"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from abstats.api.responses import JsonResponse
from abstats.db.engine import get_engine
from abstats.db.migrate import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/livez")
def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz() -> JsonResponse:
    """200 when PostgreSQL answers and the schema is at the migrations' head, else 503."""
    try:
        engine = get_engine()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current = current_revision(engine)
    except Exception as exc:  # any failure to reach the database means "not ready"
        return JsonResponse(
            {"status": "unavailable", "database": "unreachable", "detail": type(exc).__name__},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    head = head_revision()
    if current != head:
        return JsonResponse(
            {
                "status": "unavailable",
                "database": "ok",
                "migration": current,
                "head": head,
                "detail": "migrations are not at head: run `abstats db upgrade`",
            },
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return JsonResponse({"status": "ok", "database": "ok", "migration": current})


@router.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
