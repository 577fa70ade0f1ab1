"""The ``integrations`` of an experiment: how abstats plugs into the tools a team already runs.

Stored on the experiment (``experiment.integrations``, migration 0006), set at create time or by
``PATCH`` at any time (they say where data comes from and what to tell other systems, not how it
is analysed):

- ``cloudevents``: which model-server endpoints feed which variant. An inference logger's
  CloudEvent (KServe: extensions ``inferenceservicename``, ``namespace``, ``component``,
  ``endpoint``) is mapped to the first source whose given fields all equal the event's.
- ``mlflow``: the tracking server of the variants' ``models:/`` URIs, the alias a promotion sets
  on the winner, and whether every analysis is logged to an MLflow run.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from abstats.errors import FieldProblem

SELECTORS = ("inferenceservice", "namespace", "component", "endpoint")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CloudEventSource(_Model):
    """One endpoint of a model server: the fields given must all equal the event's."""

    variant: str = Field(description="The variant whose predictions these events are.")
    inferenceservice: str | None = Field(
        default=None, max_length=253, description="ce-inferenceservicename (the InferenceService)"
    )
    namespace: str | None = Field(default=None, max_length=253, description="ce-namespace")
    component: str | None = Field(
        default=None, max_length=64, description="ce-component: predictor, transformer, ..."
    )
    endpoint: str | None = Field(
        default=None, max_length=64, description="ce-endpoint, e.g. 'default' or 'canary'"
    )

    @model_validator(mode="after")
    def _needs_a_selector(self) -> CloudEventSource:
        if all(getattr(self, name) is None for name in SELECTORS):
            raise ValueError(
                "a source needs at least one of inferenceservice, namespace, component, endpoint"
            )
        return self

    def matches(self, attributes: dict[str, Any]) -> bool:
        values = {
            "inferenceservice": attributes.get("inferenceservicename"),
            "namespace": attributes.get("namespace"),
            "component": attributes.get("component"),
            "endpoint": attributes.get("endpoint"),
        }
        return all(
            getattr(self, name) is None or getattr(self, name) == values[name] for name in SELECTORS
        )


class CloudEventsIntegration(_Model):
    sources: list[CloudEventSource] = Field(min_length=1)
    unit_header: str | None = Field(
        default=None,
        max_length=200,
        description="A request header the logger records (KServe `metadataHeaders`) that carries "
        "the randomisation unit; absent: each request is its own unit (the CloudEvent id).",
    )
    score_pointer: str | None = Field(
        default=None,
        pattern=r"^(/[^/]*)*$",
        max_length=500,
        description="JSON pointer (RFC 6901) to the score in the response body; default "
        "/predictions/0 (V1 protocol) or /outputs/0/data/0 (V2 / Open Inference Protocol).",
    )
    pairing: Literal["request_response", "response"] = Field(
        default="request_response",
        description="request_response: a prediction is stored once both the request and the "
        "response event arrived (with latency); response: at the response (logger mode "
        "`response`, no latency).",
    )


class MlflowIntegration(_Model):
    tracking_uri: str | None = Field(
        default=None,
        max_length=2000,
        description="MLflow tracking/registry server; default: MLFLOW_TRACKING_URI.",
    )
    promote_alias: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,255}$",
        description="On promotion, set this registry alias (e.g. champion) on the winner's "
        "model version and tag the other variants' versions with the verdict.",
    )
    log_analyses: bool = Field(
        default=False,
        description="Log every analysis snapshot (effects, intervals, p-values, decision) as "
        "metrics of one MLflow run of the experiment.",
    )
    experiment_name: str | None = Field(
        default=None,
        max_length=500,
        description="MLflow experiment for that run; default: 'abstats/<experiment key>'.",
    )


class Integrations(_Model):
    cloudevents: CloudEventsIntegration | None = None
    mlflow: MlflowIntegration | None = None


def integration_problems(integrations: Integrations, variants: list[str]) -> list[FieldProblem]:
    """Cross-field rules: every source names a variant of the experiment."""
    problems: list[FieldProblem] = []
    if integrations.cloudevents is not None:
        for i, source in enumerate(integrations.cloudevents.sources):
            if source.variant not in variants:
                problems.append(
                    FieldProblem(
                        f"integrations.cloudevents.sources[{i}].variant",
                        f"{source.variant!r} is not one of the variants ({', '.join(variants)})",
                    )
                )
    if integrations.mlflow is not None and importlib.util.find_spec("mlflow") is None:
        problems.append(
            FieldProblem(
                "integrations.mlflow",
                "MLflow's client is not installed in this abstats: pip install 'abstats[mlflow]'",
            )
        )
    return problems
