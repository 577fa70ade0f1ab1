"""``GET /v1/experiments/{key}/report`` (JSON), ``/report.html`` and ``/report.md`` (read scope).

Rendered from the database on each request, so they are current even between the scheduler's
runs; the files in ``ABSTATS_REPORTS_DIR`` are the same report as of the latest analysis."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, PlainTextResponse

from abstats.deps import ReadKey, SessionDep
from abstats.reports import service
from abstats.reports.render import to_html, to_json_data, to_markdown

router = APIRouter(prefix="/v1/experiments/{key}", tags=["reports"])


@router.get("/report")
def report_json(key: str, session: SessionDep, _: ReadKey) -> dict[str, Any]:
    """The report as JSON: verdict, checks, results, history, decisions, setup, snapshot."""
    return to_json_data(service.build(session, key))


@router.get("/report.html", response_class=HTMLResponse)
def report_html(key: str, session: SessionDep, _: ReadKey) -> HTMLResponse:
    """The report as one self-contained HTML page (inline CSS and SVG charts)."""
    return HTMLResponse(to_html(service.build(session, key)))


@router.get("/report.md", response_class=PlainTextResponse)
def report_markdown(key: str, session: SessionDep, _: ReadKey) -> PlainTextResponse:
    """The report as Markdown."""
    return PlainTextResponse(
        to_markdown(service.build(session, key)), media_type="text/markdown; charset=utf-8"
    )
