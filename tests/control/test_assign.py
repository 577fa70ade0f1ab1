"""Assignment: weighted rendezvous hashing (sticky, correct split, monotone moves) and the
``/assign`` endpoint with its asynchronous exposure log, on committed data."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from abstats.control import service
from abstats.control.assign import AssignmentConfig, assign, rendezvous_variant
from abstats.db.models import Exposure
from abstats.keys import create_key
from tests.control.conftest import make_experiment

SALT = "5f0e1c2b"
N = 100_000


def test_split_over_100k_units_is_within_3_standard_errors() -> None:
    weights = {"v1": 70.0, "v2": 20.0, "v3": 10.0}
    counts = Counter(rendezvous_variant(SALT, f"user-{i}", weights) for i in range(N))
    for variant, w in weights.items():
        p = w / 100.0
        se = math.sqrt(N * p * (1 - p))
        assert abs(counts[variant] - N * p) < 3 * se, (variant, counts[variant], N * p, se)


def test_assignment_is_sticky_and_depends_on_the_salt() -> None:
    weights = {"v1": 50.0, "v2": 50.0}
    first = [rendezvous_variant(SALT, f"u{i}", weights) for i in range(2000)]
    assert first == [rendezvous_variant(SALT, f"u{i}", weights) for i in range(2000)]
    other = [rendezvous_variant("another-salt", f"u{i}", weights) for i in range(2000)]
    assert sum(a != b for a, b in zip(first, other, strict=True)) > 800  # ~1000 expected


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"v1": 95.0, "v2": 5.0}, {"v1": 75.0, "v2": 25.0}),  # ramp step
        ({"v1": 50.0, "v2": 30.0, "v3": 20.0}, {"v1": 50.0, "v2": 10.0, "v3": 40.0}),
        ({"v1": 34.0, "v2": 33.0, "v3": 33.0}, {"v1": 0.0, "v2": 50.0, "v3": 50.0}),
    ],
)
def test_units_move_only_into_grown_or_out_of_shrunk_variants(
    before: dict[str, float], after: dict[str, float]
) -> None:
    # compare relative shares: a variant "grew" when its share increased
    share_b = {k: v / sum(before.values()) for k, v in before.items()}
    share_a = {k: v / sum(after.values()) for k, v in after.items()}
    moved = 0
    for i in range(20_000):
        a = rendezvous_variant(SALT, f"m{i}", before)
        b = rendezvous_variant(SALT, f"m{i}", after)
        if a != b:
            moved += 1
            assert share_a[b] > share_b[b] or share_a[a] < share_b[a], (a, b)
            assert share_a[b] >= share_b[b] and share_a[a] <= share_b[a], (a, b)
    tv = 0.5 * sum(abs(share_a[k] - share_b[k]) for k in before)
    assert moved >= 20_000 * tv - 4 * math.sqrt(20_000 * tv)  # at least what must move
    if len(before) == 2:
        # with two variants (a ramp) exactly the minimum moves, within sampling noise; with more,
        # rendezvous hashing stays monotone but may move more than the total variation distance
        assert moved <= 20_000 * tv + 4 * math.sqrt(20_000 * tv)


@pytest.fixture
def api(committed: Engine) -> Iterator[tuple[TestClient, dict[str, str]]]:
    from abstats.api.app import create_app
    from abstats.keys import clear_cache

    with Session(committed) as session, session.begin():
        make_experiment(session, "assign-exp", policy={"ramp": None})
        secret = create_key(session, scope="ingest").secret
        service.start(session, "assign-exp", actor="key:test")
    clear_cache()
    with TestClient(create_app()) as client:
        yield client, {"Authorization": f"Bearer {secret}"}


def _exposures(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT e.unit_id, v.key FROM exposure e JOIN variant v ON v.id = e.variant_id ORDER BY e.unit_id"
            )
        )
        return [(r[0], r[1]) for r in rows]


def test_assign_endpoint_logs_exposures_in_the_background(
    api: tuple[TestClient, dict[str, str]], committed: Engine
) -> None:
    from abstats.control.endpoints import exposure_logger

    client, headers = api
    answers = {}
    for i in range(300):
        r = client.get(f"/v1/experiments/assign-exp/assign?unit_id=u{i}", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["variant"] in ("v1", "v2") and body["weights_epoch"] == 0
        assert body["model_version"] == {"v1": "xgb-1.0", "v2": "xgb-2.0"}[body["variant"]]
        answers[f"u{i}"] = body["variant"]
    # sticky over repeated calls; repeats are not logged twice
    for i in range(50):
        assert (
            client.get(f"/v1/experiments/assign-exp/assign?unit_id=u{i}", headers=headers).json()[
                "variant"
            ]
            == answers[f"u{i}"]
        )
    assert exposure_logger().flush(timeout=10)
    stored = _exposures(committed)
    assert len(stored) == 300
    assert dict(stored) == answers
    with Session(committed) as session:
        sources = set(session.scalars(select(Exposure.source)))
    assert sources == {"assign"}


def test_forced_variant_and_not_running_answers(
    api: tuple[TestClient, dict[str, str]], committed: Engine
) -> None:
    from abstats.control.endpoints import clear_caches, exposure_logger

    client, headers = api
    forced = client.get(
        "/v1/experiments/assign-exp/assign?unit_id=f1",
        headers={**headers, "X-Target-Variant": "v2"},
    )
    assert forced.json()["variant"] == "v2" and forced.json()["forced"] is True
    bad = client.get(
        "/v1/experiments/assign-exp/assign?unit_id=f1",
        headers={**headers, "X-Target-Variant": "v9"},
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "X-Target-Variant"
    missing = client.get("/v1/experiments/assign-exp/assign", headers=headers)
    assert missing.status_code == 422 and "unit_id is required" in missing.json()["detail"]
    assert client.get("/v1/experiments/nope/assign?unit_id=a", headers=headers).status_code == 404
    assert client.get("/v1/experiments/assign-exp/assign?unit_id=a").status_code == 401

    with Session(committed) as session, session.begin():
        service.pause(session, "assign-exp", actor="key:test")
    clear_caches()
    variants = {
        client.get(f"/v1/experiments/assign-exp/assign?unit_id=p{i}", headers=headers).json()[
            "variant"
        ]
        for i in range(40)
    }
    assert variants == {"v1"}  # paused: the control
    with Session(committed) as session, session.begin():
        service.resume(session, "assign-exp", actor="key:test")
        service.promote(session, "assign-exp", "v2", actor="key:test")
    clear_caches()
    body = client.get("/v1/experiments/assign-exp/assign?unit_id=p1", headers=headers).json()
    assert body["variant"] == "v2" and body["status"] == "concluded"  # concluded: the winner
    exposure_logger().flush(timeout=10)
    assert _exposures(committed) == []  # forced and non-running answers are not exposures


def test_answers_rendered_once_per_config_match_the_assignment() -> None:
    config = AssignmentConfig(
        experiment_id=1,
        key="pre",
        status="running",
        salt=SALT,
        control="v1",
        winner=None,
        weights={"v1": 50.0, "v2": 50.0},
        weight_epoch=3,
        variant_ids={"v1": 1, "v2": 2},
        model_versions={"v1": "m1", "v2": "m2"},
    )
    for unit in ("a", "b", "c", "d", "e", "f"):
        for target in (None, "v1", "v2"):
            result = assign(config, unit, target_variant=target)
            assert orjson.loads(config.answer_body(result)) == result.as_dict("pre", "running")
    assert len(config._bodies) == 4  # two variants, randomized or forced


def test_the_last_unit_id_of_a_repeated_parameter_is_assigned(
    api: tuple[TestClient, dict[str, str]], committed: Engine
) -> None:
    from abstats.control.endpoints import exposure_logger

    client, headers = api
    url = "/v1/experiments/assign-exp/assign"
    twice = client.get(f"{url}?unit_id=first&unit_id=sec%20ond", headers=headers)
    assert twice.status_code == 200
    assert exposure_logger().flush(timeout=10)
    assert [unit for unit, _ in _exposures(committed)] == ["sec ond"]
    assert client.get(f"{url}?unit_id=sec+ond", headers=headers).json() == twice.json()
