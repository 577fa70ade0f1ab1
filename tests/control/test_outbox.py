"""Outbox delivery on committed data: notifications exactly once despite failures, signed;
router results stored on the decision; a failing router pauses the experiment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from abstats.control import service
from abstats.control.outbox import deliver_pending
from abstats.db.models import Decision, Experiment, OutboxItem
from tests.control.conftest import make_experiment
from tests.control.receivers import Receiver, serve

SECRET = "s3cr3t-for-hmac"


def _later(minutes: int) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def test_webhook_failing_twice_gets_the_decision_exactly_once(committed: Engine) -> None:
    with serve(Receiver(secret=SECRET, fail_first=2)) as receiver:
        with Session(committed) as session, session.begin():
            make_experiment(
                session,
                "hooked",
                policy={"ramp": None},
                notifications={"webhook_url": receiver.url, "secret": SECRET},
            )
            decision_id = service.start(session, "hooked", actor="key:abc").id
        # attempt 1 fails, then the item waits for its backoff: nothing more is sent now
        assert deliver_pending(committed) == 1  # the builtin router call
        assert receiver.attempts == 1
        assert deliver_pending(committed) == 0
        assert receiver.attempts == 1
        assert deliver_pending(committed, now=_later(1)) == 0  # attempt 2 fails
        assert deliver_pending(committed, now=_later(10)) == 1  # attempt 3 succeeds
        assert deliver_pending(committed, now=_later(60)) == 0  # done: nothing is resent
        assert receiver.attempts == 3
        assert receiver.bad_signatures == 0
        assert len(receiver.processed) == 1
        payload = receiver.processed[0]
        assert payload["experiment"] == "hooked"
        assert payload["decision"]["id"] == decision_id and payload["decision"]["action"] == "start"
    with Session(committed) as session:
        item = session.scalars(select(OutboxItem).where(OutboxItem.kind == "notify")).one()
        assert item.attempts == 3 and item.done_at is not None and item.last_error is None


def test_router_result_is_stored_on_the_decision(committed: Engine) -> None:
    with Session(committed) as session, session.begin():
        make_experiment(session, "routed")
        decision_id = service.start(session, "routed", actor="key:abc").id
    assert deliver_pending(committed) == 1
    with Session(committed) as session:
        decision = session.get(Decision, decision_id)
        assert decision is not None and decision.router_result is not None
        assert decision.router_result["backend"] == "builtin"
        assert decision.router_result["read_back"] == {"v1": 95.0, "v2": 5.0}


def test_a_newer_router_call_supersedes_an_older_one(committed: Engine) -> None:
    with Session(committed) as session, session.begin():
        make_experiment(session, "twice")
        first = service.start(session, "twice", actor="key:abc").id
        second = service.set_weights(session, "twice", {"v1": 50, "v2": 50}, actor="key:abc").id
    assert deliver_pending(committed) == 1
    with Session(committed) as session:
        assert session.get(Decision, first).router_result is None  # type: ignore[union-attr]
        assert session.get(Decision, second).router_result["read_back"] == {"v1": 50.0, "v2": 50.0}  # type: ignore[index, union-attr]


def test_router_failing_n_times_pauses_with_the_error(committed: Engine) -> None:
    router = {"backend": "webhook", "config": {"url": "http://127.0.0.1:9/unreachable"}}
    with Session(committed) as session, session.begin():
        make_experiment(session, "broken", router=router, policy={"ramp": None})
        service.start(session, "broken", actor="key:abc")
    for minutes in range(0, 200, 20):
        deliver_pending(committed, now=_later(minutes), max_router_attempts=3)
    with Session(committed) as session:
        experiment = session.scalars(select(Experiment).where(Experiment.key == "broken")).one()
        assert experiment.status == "paused"
        pause = session.scalars(select(Decision).where(Decision.action == "pause")).one()
        assert pause.actor == "policy"
        assert pause.reason.startswith(
            "router failure: webhook router http://127.0.0.1:9/unreachable unreachable"
        )
        assert "(after 3 attempts)" in pause.reason
        assert pause.evidence["trigger"] == "router_failure"
        item = session.scalars(select(OutboxItem).where(OutboxItem.kind == "router")).one()
        assert item.attempts == 3 and item.done_at is not None
