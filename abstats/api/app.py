"""The FastAPI application factory. Domain routers are mounted here and nowhere else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import abstats
from abstats.analysis import endpoints as analysis
from abstats.analysis import plan_endpoints as planning
from abstats.api import health
from abstats.api.guard import install_request_guard
from abstats.api.metrics import install_request_metrics
from abstats.api.problems import install_problem_handlers
from abstats.api.responses import JsonResponse
from abstats.config import get_settings
from abstats.console import docs as console_docs
from abstats.console import views as console
from abstats.control import endpoints as control
from abstats.control import monitoring
from abstats.db.engine import get_engine
from abstats.experiments import endpoints as experiments
from abstats.ingest import endpoints as ingest
from abstats.reports import endpoints as reports
from abstats.scheduler import endpoints as pipeline

# Each domain package exposes ``router`` in its ``endpoints`` module; mounted here, in this order.
DOMAIN_ROUTERS = (experiments, ingest, analysis, planning, control, reports, pipeline)


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
        docs_url=None,  # served by abstats.console.docs with local assets (no CDN)
        redoc_url=None,
    )
    # the exposures /assign buffered are written before the process exits
    app.state.shutdown_hooks = [control.stop_exposure_logger]
    install_problem_handlers(app)
    install_request_guard(app)  # inside the metrics: refused requests are counted too
    install_request_metrics(app)
    monitoring.install(get_engine, cap=lambda: get_settings().metrics_max_experiments)
    app.include_router(health.router)
    for module in DOMAIN_ROUTERS:
        app.include_router(module.router)
    app.include_router(console_docs.router)
    app.include_router(console.router)  # the web console, and GET / -> /console/
    return app
