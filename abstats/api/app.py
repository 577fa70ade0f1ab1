"""The FastAPI application factory. Domain routers are mounted here and nowhere else."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import abstats
from abstats.api import health
from abstats.api.metrics import install_request_metrics
from abstats.api.problems import install_problem_handlers
from abstats.api.responses import JsonResponse

# Each domain package exposes ``router`` in its ``endpoints`` module. Listed here, mounted in order.
DOMAIN_ROUTERS = (
    "abstats.experiments.endpoints",
    "abstats.ingest.endpoints",
    "abstats.analysis.endpoints",
    "abstats.control.endpoints",
    "abstats.reports.endpoints",
    "abstats.scheduler.endpoints",
)


def create_app(*, with_lifespan_hooks: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hooks = app.state.shutdown_hooks if with_lifespan_hooks else []
        yield
        for hook in reversed(hooks):
            hook()

    app = FastAPI(
        title="abstats",
        version=abstats.__version__,
        description="Statistical experiment analysis and auto-promotion for ML models in production.",
        default_response_class=JsonResponse,
        lifespan=lifespan,
    )
    app.state.shutdown_hooks = []
    install_problem_handlers(app)
    install_request_metrics(app)
    app.include_router(health.router)
    for module_name in DOMAIN_ROUTERS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # that domain has no endpoints yet
                continue
            raise
        app.include_router(module.router)
    return app
