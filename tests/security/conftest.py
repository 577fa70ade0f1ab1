"""Fixtures of the security suite (issue 14): the operator's settings, an experiment, keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from abstats.config import get_settings

EXPERIMENT: dict[str, Any] = {
    "key": "guarded",
    "name": "Guarded",
    "control": "v1",
    "variants": [{"key": "v1"}, {"key": "v2"}],
    "metrics": [
        {
            "key": "conversion",
            "kind": "proportion",
            "outcome": "converted",
            "role": "primary",
            "direction": "increase",
        }
    ],
}


def experiment(key: str = "guarded", **overrides: Any) -> dict[str, Any]:
    return {**EXPERIMENT, "key": key, **overrides}


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Set operator settings (``name=value`` -> ``ABSTATS_NAME``) for one test."""

    def apply(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"ABSTATS_{name.upper()}", value)
        get_settings.cache_clear()

    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()


def problem(response: Any, status: int) -> dict[str, Any]:
    """The problem+json body of ``response``, which must have ``status``."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


def field_messages(body: dict[str, Any]) -> dict[str, str]:
    return {e["field"]: e["message"] for e in body.get("errors", [])}


@pytest.fixture
def guarded(client: TestClient, admin_headers: dict[str, str]) -> dict[str, str]:
    r = client.post("/v1/experiments", json=EXPERIMENT, headers=admin_headers)
    assert r.status_code == 201, r.text
    return admin_headers


@pytest.fixture
def committed(committed_engine: Any) -> Iterator[Any]:
    """Real commits; the in-process caches (keys, configs) are cleared around the test."""
    from abstats.control.endpoints import clear_caches

    clear_caches()
    yield committed_engine
    clear_caches()
