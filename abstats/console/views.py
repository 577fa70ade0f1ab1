"""The console's pages and forms (server-rendered, no JavaScript, nothing loaded from elsewhere).

Every page needs a signed-in key with ``read`` scope (``admin`` has every scope, as on the REST
API: ``abstats.deps.has_scope``); forms that change something need ``admin``. Every form carries
the session's CSRF token. Changes go through the same services as the REST API
(``abstats.control.service``, ``abstats.control.whatif``), with the key as the decision's actor.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from abstats.analysis.service import latest_snapshot
from abstats.console import session as auth
from abstats.console.annotate import annotate
from abstats.control import service as control
from abstats.control import whatif
from abstats.db.models import Decision, Experiment
from abstats.deps import SessionDep, has_scope
from abstats.engine import words
from abstats.engine.snapshot import SnapshotResult
from abstats.errors import AbstatsError, FieldProblem, InvalidInput
from abstats.experiments import repository
from abstats.experiments.state import experiment_spec
from abstats.keys import digest, lookup, well_formed
from abstats.reports import charts
from abstats.reports import service as reports
from abstats.reports.model import (
    Report,
    ReportInputs,
    build_report,
)
from abstats.reports.render import VERDICT_ICON, effect_text, outcome_text, to_html

router = APIRouter(include_in_schema=False)
STATIC_DIR = Path(__file__).parent / "static"
STATUSES = ("draft", "running", "paused", "concluded", "rolled_back")
LIST_LIMIT = 100
ACTIONS = ("start", "pause", "resume", "rollback", "promote", "reweight")
ACTION_FROM = {
    "start": ("draft",),
    "pause": ("running",),
    "resume": ("paused",),
    "rollback": ("running", "paused"),
    "promote": ("running", "paused"),
    "reweight": ("draft", "running", "paused"),
}
HEALTH = ("Sample ratio", "Drift", "Data freshness")
# nothing but this server: no CDN, no fonts, no scripts in the console
CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_env = Environment(
    loader=PackageLoader("abstats.console", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _weights(weights: dict[str, Any] | None) -> str:
    return words.weights({k: float(v) for k, v in weights.items()} if weights else None)


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    return f"{words.duration((now - moment).total_seconds())} ago"


def _iso(value: str | None) -> str:
    """An ISO time from a dry run or replay result, as the rest of the console shows times."""
    return words.when(datetime.fromisoformat(value)) if value else "-"


_env.globals.update(weights=_weights, when=words.when, iso=_iso)


def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    html = _env.get_template(name).render(request=request, **context)
    response = HTMLResponse(html, status_code=status_code)
    _secure(response)
    return response


class _Stop(Exception):
    """Ends a request early with ``response`` (a redirect to sign-in, a 403 page)."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _signed_in(request: Request, session: Session, scope: str = "read") -> auth.ConsoleSession:
    current = auth.current(request, session)
    if current is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise _Stop(RedirectResponse(f"/console/login?next={_quote(target)}", status_code=303))
    if not has_scope(current.principal, scope):
        raise _Stop(
            _page(
                request,
                "message.html.j2",
                403,
                me=current,
                title="Not allowed",
                message=f"This API key has scope '{current.principal.scope}'; "
                f"this page needs '{scope}'. Sign in with a {scope} or admin key.",
            )
        )
    return current


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")


def _safe_next(target: str | None) -> str:
    """Only a path on this server (never ``//host`` or a scheme): no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/console/"
    return target


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _check_csrf(me: auth.ConsoleSession, form: dict[str, str]) -> None:
    if not auth.csrf_ok(me.csrf, form.get("csrf")):
        raise InvalidInput(
            "The form's security token is missing or stale; reload the page and try again.",
            errors=[FieldProblem("csrf", "missing or does not match the session")],
        )


# --- sign-in ------------------------------------------------------------------------------------


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console/static/console.css")
def stylesheet() -> Response:
    css = (STATIC_DIR / "console.css").read_text(encoding="utf-8")
    return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=300"})


def _login(request: Request, target: str, error: str | None, status_code: int) -> Response:
    token = auth.new_token()
    response = _page(request, "login.html.j2", status_code, next=target, error=error, csrf=token)
    auth.set_login_csrf(request, response, token)
    return response


@router.get("/console/login")
def login_page(request: Request, next: str | None = None) -> Response:
    return _login(request, _safe_next(next), None, 200)


@router.post("/console/login")
async def login(request: Request, session: SessionDep) -> Response:
    form = await _form(request)
    target = _safe_next(form.get("next"))
    key = form.get("key", "").strip()
    if not auth.login_csrf_ok(request, form.get("csrf")):
        return _login(request, target, "The sign-in form expired; please try again.", 400)
    principal = lookup(session, digest(key)) if key and well_formed(key) else None
    if principal is None:
        return _login(
            request, target, "Unknown or revoked API key." if key else "Enter an API key.", 401
        )
    response = _secure(RedirectResponse(target, status_code=303))
    auth.sign_in(request, response, key)
    return response


@router.post("/console/logout")
async def logout(request: Request, session: SessionDep) -> Response:
    current = auth.current(request, session)
    form = await _form(request)
    if current is not None and not auth.csrf_ok(current.csrf, form.get("csrf")):
        return _page(
            request,
            "message.html.j2",
            400,
            me=current,
            title="Stale form",
            message="Reload the page and sign out again.",
        )
    response = _secure(RedirectResponse("/console/login", status_code=303))
    auth.sign_out(response)
    return response


# --- experiments list ---------------------------------------------------------------------------


def _summary(session: Session, experiment: Experiment, now: datetime) -> dict[str, Any]:
    row = latest_snapshot(session, experiment.id)
    snap = SnapshotResult.model_validate(row.result) if row is not None else None
    last = session.scalars(
        select(Decision)
        .where(Decision.experiment_id == experiment.id)
        .order_by(Decision.id.desc())
        .limit(1)
    ).first()
    decisions = [reports.decision_entry(last)] if last is not None else []
    report = build_report(
        ReportInputs(
            experiment=reports.experiment_info(experiment),
            snapshot=snap,
            snapshot_id=row.id if row is not None else None,
            history=[],
            epochs=[],
            decisions=decisions,
            daily_units=[],
            generated_at=now,
        )
    )
    primary = next((r for r in report.results if r.role == "primary"), None)
    checks = {c.name: c for c in report.checks}
    epoch = repository.current_epoch(session, experiment.id)
    return {
        "key": experiment.key,
        "name": experiment.name,
        "status": experiment.status,
        "verdict": report.verdict,
        "icon": VERDICT_ICON.get(report.verdict.kind, ""),
        "primary": primary,
        "effect": effect_text(primary) if primary else "",
        "outcome": outcome_text(primary) if primary else "",
        "health": [(name, checks.get(name)) for name in HEALTH],
        "split": _weights(
            control.effective_weights(experiment, {k: float(v) for k, v in epoch.weights.items()})
        )
        if epoch is not None
        else "-",
        "planned": _weights(epoch.weights) if epoch is not None else "-",
        "cutoff": report.cutoff,
        "analysed": _ago(report.cutoff, now) if report.cutoff else "no analysis yet",
    }


@router.get("/console/")
def experiments(request: Request, session: SessionDep, status: str | None = None) -> Response:
    try:
        me = _signed_in(request, session)
    except _Stop as stop:
        return stop.response
    chosen = status if status in STATUSES else None
    rows = repository.list_experiments(
        session, limit=LIST_LIMIT + 1, starting_after=None, status=chosen
    )
    now = datetime.now(UTC)
    return _page(
        request,
        "experiments.html.j2",
        me=me,
        items=[_summary(session, e, now) for e in rows[:LIST_LIMIT]],
        more=len(rows) > LIST_LIMIT,
        statuses=STATUSES,
        chosen=chosen,
    )


# --- one experiment -----------------------------------------------------------------------------


def _traffic_chart(report: Report) -> str:
    variants = [v["key"] for v in report.experiment.variants]
    end = report.cutoff or report.generated_at
    if report.epochs:
        end = max(end, report.epochs[-1].started_at)
    spans = [(e.started_at, e.ended_at or max(end, e.started_at), e.weights) for e in report.epochs]
    markers = [(d.created_at, f"{d.action}: {d.reason}") for d in report.decisions if d.applied]
    return charts.traffic_share(spans, variants, markers)


def _actions(experiment: Experiment) -> list[str]:
    return [a for a in ACTIONS if experiment.status in ACTION_FROM[a]]


@router.get("/console/experiments/{key}")
def experiment_page(
    request: Request, session: SessionDep, key: str, done: int | None = None
) -> Response:
    try:
        me = _signed_in(request, session)
        report = reports.build(session, key)
    except _Stop as stop:
        return stop.response
    except AbstatsError as exc:
        return _problem_page(request, session, exc)
    experiment = repository.get_experiment(session, key)
    variants = [v["key"] for v in report.experiment.variants]
    done_decision = None
    if done is not None:
        done_decision = next((d for d in report.decisions if d.id == done), None)
    epoch = repository.current_epoch(session, experiment.id)
    return _page(
        request,
        "experiment.html.j2",
        me=me,
        report=report,
        exp=report.experiment,
        icon=VERDICT_ICON.get(report.verdict.kind, ""),
        rows=[
            {"row": r, "effect": effect_text(r), "outcome": outcome_text(r)} for r in report.results
        ],
        traffic_chart=_traffic_chart(report),
        colour_of={k: charts.variant_colour(i) for i, k in enumerate(variants)},
        decisions=list(reversed(report.decisions)),
        admin=has_scope(me.principal, "admin"),
        actions=_actions(experiment),
        variants=[v for v in report.experiment.variants if not v.get("retired")],
        weights_now={k: float(v) for k, v in (epoch.weights if epoch else {}).items()},
        done=done_decision,
    )


@router.get("/console/experiments/{key}/report")
def report_page(request: Request, session: SessionDep, key: str) -> Response:
    """The live HTML report (the same as ``GET /v1/experiments/{key}/report.html``)."""
    try:
        _signed_in(request, session)
        html = to_html(reports.build(session, key))
    except _Stop as stop:
        return stop.response
    except AbstatsError as exc:
        return _problem_page(request, session, exc)
    return _secure(HTMLResponse(html))


def _problem_page(request: Request, session: Session, exc: AbstatsError) -> Response:
    session.rollback()
    return _page(
        request,
        "message.html.j2",
        exc.status,
        me=auth.current(request, session),
        title=exc.title,
        message=exc.detail,
    )


def _parse_weights(form: dict[str, str], variants: list[str]) -> dict[str, Any]:
    weights: dict[str, Any] = {}
    for v in variants:
        raw = form.get(f"weight_{v}", "").strip()
        if not raw:
            continue
        try:
            number = float(raw)
        except ValueError:
            number = math.nan
        weights[v] = number if math.isfinite(number) else raw
    return weights


@router.post("/console/experiments/{key}/actions/{action}")
async def act(request: Request, session: SessionDep, key: str, action: str) -> Response:
    """First post: a confirmation page; the confirmed post calls the control service."""
    try:
        me = _signed_in(request, session, "admin")
    except _Stop as stop:
        return stop.response
    form = await _form(request)
    try:
        _check_csrf(me, form)
        if action not in ACTIONS:
            raise InvalidInput(f"Unknown action {action!r}; one of {', '.join(ACTIONS)}.")
        experiment = repository.get_experiment(session, key)
        variants = [v.key for v in experiment.variants]
        reason = form.get("reason", "").strip()
        weights = _parse_weights(form, variants) if action == "reweight" else {}
        problems = []
        if not reason:
            problems.append(FieldProblem("reason", "say why: it is kept on the decision"))
        if action == "promote" and form.get("variant") not in variants:
            problems.append(FieldProblem("variant", f"choose one of {', '.join(variants)}"))
        if problems:
            raise InvalidInput(
                "; ".join(f"{p.field}: {p.message}" for p in problems), errors=problems
            )
        if form.get("confirmed") != "yes":
            return _page(
                request,
                "confirm.html.j2",
                me=me,
                exp=experiment,
                action=action,
                reason=reason,
                variant=form.get("variant", ""),
                weights=weights,
                weights_text=_weights(
                    {k: float(v) for k, v in weights.items() if isinstance(v, float)}
                ),
                status=experiment.status,
            )
        actor = me.principal.actor
        if action == "promote":
            decision = control.promote(session, key, form["variant"], actor=actor, reason=reason)
        elif action == "reweight":
            decision = control.set_weights(session, key, weights, actor=actor, reason=reason)
        else:
            decision = getattr(control, action)(session, key, actor=actor, reason=reason)
    except AbstatsError as exc:
        return _problem_page(request, session, exc)
    return _secure(
        RedirectResponse(f"/console/experiments/{key}?done={decision.id}", status_code=303)
    )


# --- policy editor ------------------------------------------------------------------------------


def _policy_page(
    request: Request,
    me: auth.ConsoleSession,
    experiment: Experiment,
    text: str,
    status_code: int = 200,
    **context: Any,
) -> Response:
    defaults: dict[str, Any] = {
        "problems": [],
        "lines": [],
        "syntax": None,
        "dry": None,
        "replay": None,
        "saved": False,
        "checked": False,
    }
    defaults.update(context)
    return _page(
        request,
        "policy.html.j2",
        status_code,
        me=me,
        exp=experiment,
        text=text,
        admin=has_scope(me.principal, "admin"),
        **defaults,
    )


@router.get("/console/experiments/{key}/policy")
def policy_page(request: Request, session: SessionDep, key: str) -> Response:
    try:
        me = _signed_in(request, session)
        experiment = repository.get_experiment(session, key)
    except _Stop as stop:
        return stop.response
    except AbstatsError as exc:
        return _problem_page(request, session, exc)
    text = json.dumps(experiment_spec(experiment).policy.model_dump(mode="json"), indent=2)
    return _policy_page(request, me, experiment, text)


@router.post("/console/experiments/{key}/policy")
async def policy_submit(request: Request, session: SessionDep, key: str) -> Response:
    """``op``: check, dry-run, replay (read scope; nothing written) or save (admin)."""
    try:
        me = _signed_in(request, session)
        experiment = repository.get_experiment(session, key)
    except _Stop as stop:
        return stop.response
    except AbstatsError as exc:
        return _problem_page(request, session, exc)
    form = await _form(request)
    text = form.get("policy", "")
    op = form.get("op", "check")
    try:
        _check_csrf(me, form)
    except InvalidInput as exc:
        return _policy_page(request, me, experiment, text, 400, problems=exc.errors)
    try:
        body = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        col = getattr(exc, "colno", None)
        where = f"line {line}, column {col}: " if line else ""
        return _policy_page(
            request, me, experiment, text, 422, syntax=f"Not JSON: {where}{exc.args[0]}"
        )
    try:
        if op == "save":
            if not has_scope(me.principal, "admin"):
                return _policy_page(
                    request,
                    me,
                    experiment,
                    text,
                    403,
                    problems=[
                        FieldProblem(
                            "policy",
                            f"saving needs an admin key; this key has scope '{me.principal.scope}'",
                        )
                    ],
                )
            saved = control.put_policy(session, key, body)
            return _policy_page(request, me, experiment, json.dumps(saved, indent=2), saved=True)
        if op == "dry-run":
            dry = whatif.dry_run(session, key, body).as_dict()
            return _policy_page(request, me, experiment, text, dry=dry)
        if op == "replay":
            replay = whatif.replay(session, key, body).as_dict()
            return _policy_page(request, me, experiment, text, replay=replay)
        control.validate_policy(experiment, body)
        return _policy_page(request, me, experiment, text, checked=True)
    except InvalidInput as exc:
        session.rollback()
        experiment = repository.get_experiment(session, key)
        return _policy_page(
            request,
            me,
            experiment,
            text,
            422,
            problems=exc.errors,
            lines=annotate(body, exc.errors),
            summary=exc.detail,
        )
    except AbstatsError as exc:
        session.rollback()
        experiment = repository.get_experiment(session, key)
        return _policy_page(request, me, experiment, text, exc.status, failure=exc.detail)
