"""``/metrics`` carries per-experiment series read from the database at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, event

from abstats.config import get_settings
from abstats.control.monitoring import ExperimentCollector
from abstats.db.engine import get_engine

from .conftest import EXPERIMENT, Running

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, (
        f"{name}{labels} not exported; have {sorted(n for n, _ in found if n == name)}"
    )
    return found[key]


def series_of(found: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for n, labels in found if n == name]


def test_a_running_experiment_has_its_series(running: Running) -> None:
    found = samples(running.scrape())
    assert value(found, "abstats_experiment_metrics_up") == 1
    assert value(found, "abstats_experiment_running", experiment="churn") == 1
    for variant in ("v1", "v2"):
        assert (
            value(found, "abstats_experiment_variant_weight", experiment="churn", variant=variant)
            == 0.5
        )
        assert (
            value(found, "abstats_experiment_variant_units", experiment="churn", variant=variant)
            == 200
        )
        latency_events = value(
            found, "abstats_experiment_variant_events",
            experiment="churn", metric="latency_p95", variant=variant,
        )  # fmt: skip
        assert latency_events == 200  # one prediction per unit
    conversions = value(
        found,
        "abstats_experiment_variant_events",
        experiment="churn",
        metric="conversion",
        variant="v2",
    )
    assert 40 < conversions < 120  # about 40% of 200 units converted
    for metric, role in (("conversion", "primary"), ("latency_p95", "guardrail")):
        labels = {"experiment": "churn", "metric": metric, "role": role, "variant": "v2"}
        effect = value(found, "abstats_experiment_effect", **labels, scale="relative")
        lower = value(found, "abstats_experiment_effect_lower", **labels, scale="relative")
        upper = value(found, "abstats_experiment_effect_upper", **labels, scale="relative")
        assert lower <= effect <= upper
        assert 0 <= value(found, "abstats_experiment_p_value", **labels) <= 1
        assert value(found, "abstats_experiment_metric_worse", **labels) in (0, 1)
    # v2 converts twice as often: a positive relative effect
    assert value(
        found, "abstats_experiment_effect", experiment="churn", metric="conversion",
        role="primary", variant="v2", scale="relative",
    ) > 0.3  # fmt: skip
    assert 0 <= value(found, "abstats_experiment_srm_p_value", experiment="churn") <= 1
    assert value(found, "abstats_experiment_srm_flagged", experiment="churn") == 0
    age = value(found, "abstats_experiment_last_analysis_age_seconds", experiment="churn")
    assert 0 <= age < 60
    assert (
        value(found, "abstats_experiment_last_analysis_timestamp_seconds", experiment="churn")
        > 1.7e9
    )
    assert value(
        found, "abstats_experiment_decisions_total", experiment="churn", action="start", applied="true"
    ) == 1  # fmt: skip
    assert value(found, "abstats_experiments", status="running") == 1
    assert value(found, "abstats_outbox_pending", kind="router") >= 0
    assert value(found, "abstats_router_failures_total") == 0


@pytest.fixture
def cap_one(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ABSTATS_METRICS_MAX_EXPERIMENTS", "1")
    get_settings.cache_clear()
    yield
    monkeypatch.delenv("ABSTATS_METRICS_MAX_EXPERIMENTS")
    get_settings.cache_clear()


def test_only_active_experiments_up_to_the_cap(running: Running, cap_one: None) -> None:
    client, admin = running.client, running.admin
    for key in ("upsell", "retired"):
        body = {**EXPERIMENT, "key": key}
        assert client.post("/v1/experiments", json=body, headers=admin).status_code == 201
        assert client.post(f"/v1/experiments/{key}/start", headers=admin).status_code == 200
    assert client.post("/v1/experiments/retired/rollback", headers=admin).status_code == 200
    found = samples(running.scrape())
    # upsell started last: the one experiment the cap keeps; the rolled-back one never appears
    assert series_of(found, "abstats_experiment_running") == [{"experiment": "upsell"}]
    assert value(found, "abstats_experiment_metrics_omitted") == 1
    assert {s["experiment"] for s in series_of(found, "abstats_experiment_variant_weight")} == {
        "upsell"
    }
    assert value(found, "abstats_experiments", status="rolled_back") == 1


def test_a_scrape_costs_two_statements_whatever_the_number_of_experiments(running: Running) -> None:
    statements: list[str] = []

    def count(*args: object) -> None:
        statements.append(str(args[2]))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", count)
    try:
        running.scrape()
        one = len(statements)
        for key in ("a1", "a2", "a3"):
            body = {**EXPERIMENT, "key": key}
            assert (
                running.client.post("/v1/experiments", json=body, headers=running.admin).status_code
                == 201
            )
            assert (
                running.client.post(
                    f"/v1/experiments/{key}/start", headers=running.admin
                ).status_code
                == 200
            )
        statements.clear()
        found = samples(running.scrape())
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert one == 2 and len(statements) == 2, statements
    assert len(series_of(found, "abstats_experiment_running")) == 4


def test_database_down_reports_up_zero_instead_of_failing() -> None:
    dead = create_engine(
        "postgresql+psycopg2://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1}
    )
    families = list(ExperimentCollector(lambda: dead, cap=lambda: 10).collect())
    assert [(f.name, [s.value for s in f.samples]) for f in families] == [
        ("abstats_experiment_metrics_up", [0.0])
    ]
