"""Router backends: each applies a weight vector to a real router and reads it back.

``get_router(spec)`` builds the backend named by an experiment's ``router`` JSON
(``{"backend": ..., "config": {...}}``, see ``abstats.experiments.specs.RouterSpec``).
"""

from __future__ import annotations

from typing import Any

from abstats.config import Settings, get_settings
from abstats.control.routers.base import PermanentRouterError, Router, RouterResult
from abstats.errors import FieldProblem, InvalidInput
from abstats.experiments.specs import RouterSpec
from abstats.experiments.targets import resolve_file, router_problems

__all__ = ["PermanentRouterError", "Router", "RouterResult", "get_router"]


def get_router(
    spec: RouterSpec | dict[str, Any], *, experiment: str = "", settings: Settings | None = None
) -> Router:
    """The backend, built only from a config the operator's settings allow (checked again here:
    an experiment may predate a change of the settings); anything else is a permanent error."""
    if isinstance(spec, dict):
        spec = RouterSpec.model_validate(spec or {})
    settings = settings or get_settings()
    config = dict(spec.config)
    problems = router_problems(spec.backend, config, settings)
    if problems:
        raise PermanentRouterError(
            "the router config is not allowed by this server's settings: "
            + "; ".join(f"{p.field} {p.message}" for p in problems)
        )
    try:
        if spec.backend == "builtin":
            from abstats.control.routers.builtin import BuiltinRouter

            return BuiltinRouter()
        if spec.backend == "flagd_file":
            from abstats.control.routers.flagd_file import FlagdFileRouter

            config["path"] = resolve_file(config["path"], settings.flagd_dir)
            return FlagdFileRouter.from_config(config, experiment=experiment)
        if spec.backend == "nginx":
            from abstats.control.routers.nginx import NginxRouter

            config["include_path"] = resolve_file(
                config["include_path"], settings.nginx_include_dir
            )
            config["test_command"] = list(settings.nginx_test_command)
            config["reload_command"] = list(settings.nginx_reload_command)
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
