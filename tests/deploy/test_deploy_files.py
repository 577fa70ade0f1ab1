"""The shipped Grafana dashboard and Prometheus rules: valid, and about series abstats exports.

``promtool`` comes from Debian's ``prometheus`` package (``.ci/system-packages`` installs it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Running

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "abstats-experiments.json"
RULES = DEPLOY / "prometheus" / "abstats-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "abstats-alerts.test.yml"

_DATASOURCE = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": {"const": "prometheus"}, "uid": {"type": "string"}},
}
# The parts of Grafana's dashboard model (schemaVersion 39) that Grafana needs to import the file
# and that our panels use; unknown panel types or a target without a query would load as broken.
DASHBOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "time": {
            "type": "object",
            "required": ["from", "to"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
        },
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "type"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^[a-z_]+$"},
                            "type": {"enum": ["datasource", "query", "custom", "interval"]},
                        },
                    },
                }
            },
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "type": {"enum": ["row", "timeseries", "stat", "table", "gauge", "bargauge"]},
                    "title": {"type": "string", "minLength": 1},
                    "gridPos": {
                        "type": "object",
                        "required": ["h", "w", "x", "y"],
                        "properties": {
                            "h": {"type": "integer", "minimum": 1},
                            "w": {"type": "integer", "minimum": 1, "maximum": 24},
                            "x": {"type": "integer", "minimum": 0, "maximum": 23},
                            "y": {"type": "integer", "minimum": 0},
                        },
                    },
                    "datasource": _DATASOURCE,
                    "targets": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["refId", "expr"],
                            "properties": {
                                "refId": {"type": "string", "pattern": "^[A-Z]$"},
                                "expr": {"type": "string", "minLength": 1},
                                "datasource": _DATASOURCE,
                            },
                        },
                    },
                },
                "if": {"properties": {"type": {"not": {"const": "row"}}}},
                "then": {"required": ["datasource", "targets"]},
            },
        },
    },
}


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(<series>, <label>)
            found = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
            assert found, f"unexpected variable query {variable['query']}"
            queries.append(found.group(1))
    return queries


def rule_queries() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


# Grafana's built-in range variables are not PromQL; give them a value before parsing.
_GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def series_names(expr: str) -> set[str]:
    """The metric names an expression selects (walking promql-parser's syntax tree)."""
    for variable, value in _GRAFANA_RANGES.items():
        expr = expr.replace(variable, value)
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            names.add(node.name)
            return
        if isinstance(node, promql_parser.MatrixSelector):
            walk(node.vector_selector)
        elif isinstance(node, promql_parser.BinaryExpr):
            walk(node.lhs)
            walk(node.rhs)
        elif isinstance(node, promql_parser.Call):
            for arg in node.args:
                walk(arg)
        elif isinstance(node, promql_parser.AggregateExpr):
            walk(node.expr)
            if node.param is not None:
                walk(node.param)
        elif isinstance(
            node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)
        ):
            walk(node.expr)

    walk(promql_parser.parse(expr))
    return names


def test_series_names_parses_the_whole_expression() -> None:
    expr = (
        'max by (k) (rate(a_total{x=~"$experiment"}[$__rate_interval])) > 0 and on (k) '
        '-(b) unless sum(rate(c_bucket[5m:1m])) / count_values("v", d)'
    )
    assert series_names(expr) == {"a_total", "b", "c_bucket", "d"}


def test_dashboard_matches_the_schema() -> None:
    dashboard = load_dashboard()
    jsonschema.validate(dashboard, DASHBOARD_SCHEMA)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['title']!r} is wider than the grid"
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), f"duplicate refId in {panel['title']!r}"
    names = {v["name"] for v in dashboard["templating"]["list"]}
    used = set(re.findall(r"\$\{?(\w+)", json.dumps(dashboard))) - {"__rate_interval"}
    assert used <= names, f"undefined dashboard variables: {used - names}"


def rule_test_series() -> list[str]:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    return [s["series"] for t in tests["tests"] for s in t["input_series"]]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (Debian package `prometheus`; see .ci/system-packages)")
    return found


def test_rules_pass_promtool() -> None:
    checked = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout


def test_alerts_fire_in_promtool_unit_tests() -> None:
    """SRM, guardrail breach (not a primary), stale analysis (running, not paused), router
    delivery: each fires when it should and not before, once although two replicas are scraped."""
    tested = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_query_names_a_series_abstats_exports(running: Running) -> None:
    exported = {
        sample.name
        for family in text_string_to_metric_families(running.scrape())
        for sample in family.samples
    }
    queries = dashboard_queries(load_dashboard()) + rule_queries() + rule_test_series()
    assert len(queries) > 20
    used: dict[str, str] = {}
    for expr in queries:
        names = series_names(expr)
        assert names, f"no series in {expr!r}"
        used.update(dict.fromkeys(names, expr))
    missing = {name: expr for name, expr in used.items() if name not in exported}
    assert not missing, f"queries name series /metrics does not export: {missing}"
    # the per-experiment series of the issue are all used by the dashboard or the rules
    for name in (
        "abstats_experiment_variant_weight",
        "abstats_experiment_variant_units",
        "abstats_experiment_variant_events",
        "abstats_experiment_effect",
        "abstats_experiment_effect_lower",
        "abstats_experiment_effect_upper",
        "abstats_experiment_p_value",
        "abstats_experiment_srm_p_value",
        "abstats_experiment_last_analysis_age_seconds",
        "abstats_experiment_decisions_total",
        "abstats_router_failures_total",
    ):
        assert name in used, f"{name} is exported but neither charted nor alerted on"
