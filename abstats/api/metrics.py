"""Prometheus instruments shared by the API (request counts and latencies by route)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "abstats_http_requests_total", "HTTP requests by route and status class", ["route", "status"]
)
HTTP_LATENCY = Histogram(
    "abstats_http_request_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def install_request_metrics(app: FastAPI) -> None:
    @app.middleware("http")
    async def _observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        HTTP_LATENCY.labels(path).observe(time.perf_counter() - start)
        HTTP_REQUESTS.labels(path, f"{response.status_code // 100}xx").inc()
        return response
