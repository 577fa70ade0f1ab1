"""The router backend an experiment's weights are applied through (``docs/routers.md``).

Metric and policy specifications are the engine's (``abstats.engine.specs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RouterBackend = Literal["builtin", "flagd_file", "nginx", "sagemaker", "webhook"]


class RouterSpec(BaseModel):
    """Which router applies the weights, and its settings (docs/routers.md).

    - builtin: none.
    - flagd_file: ``path``, ``flag_key``.
    - nginx: ``include_path``, ``upstreams`` {variant: upstream}, ``test_command``, ``reload_command``.
    - sagemaker: ``endpoint_name``, ``region``, ``variant_names`` {variant: production variant}, ``endpoint_url``.
    - webhook: ``url``, ``secret``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: RouterBackend = "builtin"
    config: dict[str, Any] = Field(default_factory=dict)
