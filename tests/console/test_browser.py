"""The console in a real headless Chromium (Debian's ``chromium``, driven by Playwright; Playwright
never downloads a browser here), against ``abstats``' app served by uvicorn on a free port and the
real test database.

A person signs in with a key, reads the list, opens an experiment and its report, makes the policy
invalid and sees each message at its field, runs a dry run and a replay, and pauses with a reason.
Screenshots at 1280x800 and 390x844 of the list, the experiment page and the report (and the
sample report with every kind of chart): no page scrolls horizontally and no text is cut by its
container. ``make screenshots`` keeps them in ``reports/screenshots/`` (``ABSTATS_SCREENSHOT_DIR``);
otherwise they go to a temporary directory.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Chromium is not installed (.ci/system-packages installs it)",
)

# Every problem of layout on the page: horizontal page scroll, any element whose text is wider
# than its box (scrollWidth > clientWidth: cut off, or spilling out of its container; inline
# elements have no box of their own, their block ancestors are measured instead), and chart text
# that reaches past the edge of its SVG (where it would be clipped).
OVERFLOW_JS = """
() => {
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > doc.clientWidth) {
    problems.push(`the page scrolls sideways: ${doc.scrollWidth} > ${doc.clientWidth}`);
  }
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('svg') || !el.textContent.trim()) continue;
    const style = getComputedStyle(el);
    if (style.display === 'inline' || style.display === 'none' || style.display === 'contents') continue;
    if (el.scrollWidth > el.clientWidth + 1) {
      const name = el.tagName.toLowerCase() + (el.className ? '.' + el.className : '');
      problems.push(`${name} "${el.textContent.trim().slice(0, 50)}": ${el.scrollWidth} > ${el.clientWidth}`);
    }
  }
  // chart text (tick labels, axis titles, decision labels) must lie inside its chart
  for (const text of document.querySelectorAll('svg text')) {
    const box = text.getBoundingClientRect();
    const frame = text.ownerSVGElement.getBoundingClientRect();
    if (box.width === 0) continue;
    if (box.left < frame.left - 1 || box.right > frame.right + 1 ||
        box.top < frame.top - 1 || box.bottom > frame.bottom + 1) {
      problems.push(`chart text "${text.textContent}" is cut at the edge of its chart`);
    }
  }
  return problems;
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _build_history(now: datetime) -> str:
    """An experiment started 2 h ago at the 5% ramp step, analysed every 20 minutes, each snapshot
    judged by the policy as the scheduler would (ramp advances, then a promotion is *not* reached:
    the primary effect is not yet significant). Returns an admin key."""
    from sqlalchemy import update

    from abstats.control import service
    from abstats.db.engine import session_scope
    from abstats.db.models import OutboxItem
    from abstats.experiments import repository
    from abstats.keys import create_key
    from tests.control.conftest import add_snapshot, make_experiment
    from tests.control.snapshots import comparison, good_guardrail, primary, snapshot

    start = now - timedelta(hours=2)
    with session_scope() as session:
        secret = create_key(session, scope="admin", name="browser").secret
        make_experiment(session, "draft-one", name="A draft with a rather long name to wrap")
        experiment = make_experiment(
            session,
            "churn",
            name="Churn model v2 (gradient boosting)",
            variants=[
                {"key": "v1", "model_version": "xgb-1.0"},
                {
                    "key": "v2",
                    "model_version": "xgb-2.0-2026-11-30-candidate",
                    "metadata": {
                        "artifact": "s3://models/churn/2026-11-30/xgb-2.0-candidate/model.joblib"
                    },
                },
            ],
            policy={"ramp": {"steps": [5, 25, 50, 100], "min_interval": "30m"}},
        )
        started = service.start(session, "churn", actor="key:browser", reason="first ramp step")
        # as if created and started two hours ago
        experiment.started_at = started.created_at = start
        for e in repository.weight_history(session, experiment.id):
            e.started_at = start - timedelta(minutes=1) if e.epoch == 0 else start
            e.ended_at = start if e.epoch == 0 else e.ended_at
        session.flush()

        def routers_confirm(at: datetime) -> None:
            # no scheduler here: the router calls are delivered (applied and read back) at ``at``
            session.execute(
                update(OutboxItem)
                .where(OutboxItem.experiment_id == experiment.id, OutboxItem.done_at.is_(None))
                .values(done_at=at)
            )

        routers_confirm(start)
        for minutes in (20, 40, 60, 80, 100):
            epoch = repository.current_epoch(session, experiment.id)
            assert epoch is not None
            cutoff = start + timedelta(minutes=minutes)
            effect = 0.02 + minutes / 10000
            row = add_snapshot(
                session,
                experiment,
                snapshot(
                    [
                        primary(comparison(effect=effect, lo=effect - 0.03, hi=effect + 0.03)),
                        good_guardrail(),
                    ],
                    cutoff=cutoff,
                    weight_epoch=epoch.epoch,
                    weights={k: float(v) for k, v in epoch.weights.items()},
                ).model_copy(update={"experiment": "churn", "runtime_seconds": minutes * 60.0}),
            )
            service.evaluate_snapshot(session, experiment, row, now=cutoff)
            routers_confirm(cutoff)
    return secret


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[tuple[str, str]]:
    import uvicorn

    from abstats.api.app import create_app

    secret = _build_history(datetime.now(UTC))
    port = _free_port()
    uv = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", secret
    uv.should_exit = True
    thread.join(timeout=10)
    from sqlalchemy import text

    from abstats.db.base import Base

    tables = ", ".join(f'"{t.name}"' for t in reversed(Base.metadata.sorted_tables))
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("ABSTATS_SCREENSHOT_DIR")
    directory = Path(given) if given else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _check_layout(page: Any, shots: Path, name: str) -> None:
    """At both sizes: a full-page screenshot, no sideways scroll, no text cut off."""
    problems: dict[str, list[str]] = {}
    for size, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(50)
        page.screenshot(path=str(shots / f"{name}-{size}.png"), full_page=True)
        found = page.evaluate(OVERFLOW_JS)
        if found:
            problems[f"{size} {width}x{height}"] = found
    page.set_viewport_size({"width": 1280, "height": 800})
    assert not problems, f"{name}: {problems}"
    assert (shots / f"{name}-phone.png").stat().st_size > 5000


def _follow(page: Any, selector: str) -> None:
    """Click a link or a submit button and wait for the page it leads to."""
    with page.expect_navigation():
        page.click(selector)


def _outside_requests(page: Any, base: str) -> list[str]:
    outside: list[str] = []
    page.on(
        "request",
        lambda r: None if r.url.startswith((base, "data:", "about:")) else outside.append(r.url),
    )
    return outside


def test_a_person_with_a_browser_and_a_key(
    server: tuple[str, str], browser: Any, shots: Path
) -> None:
    base, secret = server
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    outside = _outside_requests(page, base)

    # sign in: / leads to the sign-in page, and back to the console
    page.goto(base + "/")
    assert page.url.startswith(base + "/console/login")
    page.fill("#key", "abs_wrong_key")
    _follow(page, "button[type=submit]")
    assert "Unknown or revoked API key" in page.inner_text("#login-error")
    page.fill("#key", secret)
    _follow(page, "button[type=submit]")
    assert page.url == base + "/console/"
    cookie = next(c for c in context.cookies() if c["name"] == "abstats_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0

    # the list
    row = page.locator('tr.exp[data-key="churn"]')
    assert "running" in row.inner_text()
    assert "conversion" in row.inner_text() and "Sample ratio" in row.inner_text()
    _follow(page, 'a[href="/console/?status=draft"]')
    assert page.locator("tr.exp").count() == 1
    _follow(page, 'a[href="/console/"]')
    _check_layout(page, shots, "list")

    # the experiment page and its report
    _follow(page, 'a[href="/console/experiments/churn"]')
    assert "advance_ramp" in page.inner_text("ol.timeline")
    assert page.locator("#split-title + figure svg.chart").count() == 1
    _check_layout(page, shots, "experiment")
    _follow(page, "#open-report")
    assert "Health checks" in page.inner_text("body")
    _check_layout(page, shots, "report")
    with page.expect_navigation():
        page.go_back()

    # the policy: an invalid one shows each message right under its field
    _follow(page, "#open-policy")
    page.fill("#policy", '{\n  "alpha": 2,\n  "ramp": {"steps": [50, 5], "min_interval": "30m"}\n}')
    _follow(page, "#dry-run")
    message = page.locator('[data-field="policy.ramp.steps"]')
    assert "ramp steps must increase" in message.inner_text()
    line_above = message.evaluate("el => el.previousElementSibling.dataset.path")
    assert line_above == "ramp.steps"
    alpha = page.locator('[data-field="policy.alpha"]')
    assert alpha.evaluate("el => el.previousElementSibling.dataset.path") == "alpha"
    assert page.get_attribute("#policy", "aria-invalid") == "true"
    _check_layout(page, shots, "policy-invalid")

    # a dry run and a replay of a valid one
    page.fill("#policy", '{"ramp": {"steps": [5, 25, 50, 100], "min_interval": "30m"}}')
    _follow(page, "#dry-run")
    dry = page.inner_text("#dry-run-result")
    assert "On snapshot" in dry and "this policy would" in dry
    page.fill("#policy", '{"ramp": {"steps": [5, 50, 100], "min_interval": "10m"}}')
    _follow(page, "#replay")
    replay = page.inner_text("#replay-result")
    assert "over 5 snapshots" in replay and "advance ramp 5% -> 50%" in replay
    _check_layout(page, shots, "policy-replay")

    # pause with a reason, confirmed on the next page
    page.goto(base + "/console/experiments/churn")
    page.fill("#pause-reason", "latency alarm on the candidate")
    _follow(page, "#action-pause button[type=submit]")
    assert "Pause churn?" in page.inner_text("h1")
    _follow(page, "#confirm")
    done = page.inner_text("#done")
    assert "pause" in done and "latency alarm on the candidate" in done
    assert "paused" in page.inner_text("p.meta")

    assert outside == [], f"requests left the server: {outside}"
    context.close()


def test_docs_load_offline(server: tuple[str, str], browser: Any) -> None:
    base, _ = server
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    outside = _outside_requests(page, base)
    page.goto(base + "/docs")
    page.wait_for_selector('[data-path="/v1/experiments/{key}/policy/replay"]', timeout=15000)
    assert page.locator(".opblock").count() > 20  # every operation rendered
    assert outside == [], f"requests left the server: {outside}"
    context.close()


def test_the_sample_report_reads_at_both_widths(browser: Any, shots: Path) -> None:
    from abstats.reports.render import to_html
    from abstats.reports.screenshot import sample_report

    page = browser.new_page()
    page.set_content(to_html(sample_report(datetime(2026, 11, 20, 12, 0, tzinfo=UTC))))
    _check_layout(page, shots, "report-sample")
    page.close()
