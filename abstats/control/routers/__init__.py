"""Router backends: each applies a weight vector to a real router and reads it back.

``get_router(spec)`` builds the backend named by an experiment's ``router`` JSON
(``{"backend": ..., "config": {...}}``, see ``abstats.experiments.specs.RouterSpec``).
"""

from __future__ import annotations

from typing import Any

from abstats.control.routers.base import PermanentRouterError, Router, RouterResult
from abstats.errors import FieldProblem, InvalidInput
from abstats.experiments.specs import RouterSpec

__all__ = ["PermanentRouterError", "Router", "RouterResult", "get_router"]


def get_router(spec: RouterSpec | dict[str, Any], *, experiment: str = "") -> Router:
    if isinstance(spec, dict):
        spec = RouterSpec.model_validate(spec or {})
    config = dict(spec.config)
    try:
        if spec.backend == "builtin":
            from abstats.control.routers.builtin import BuiltinRouter

            return BuiltinRouter()
        if spec.backend == "flagd_file":
            from abstats.control.routers.flagd_file import FlagdFileRouter

            return FlagdFileRouter.from_config(config, experiment=experiment)
        if spec.backend == "nginx":
            from abstats.control.routers.nginx import NginxRouter

            return NginxRouter.from_config(config)
        if spec.backend == "sagemaker":
            from abstats.control.routers.sagemaker import SageMakerRouter

            return SageMakerRouter.from_config(config)
        from abstats.control.routers.webhook import WebhookRouter

        return WebhookRouter.from_config(config, experiment=experiment)
    except KeyError as exc:
        field = f"router.config.{exc.args[0]}"
        raise InvalidInput(
            f"Router backend {spec.backend!r} needs {field}.",
            errors=[FieldProblem(field, f"required by the {spec.backend} backend")],
        ) from None
