"""Prometheus instruments shared by the API (request counts and latencies by route).

The request middleware is plain ASGI rather than ``@app.middleware("http")``: Starlette's
``BaseHTTPMiddleware`` wraps every request and response body in extra tasks and streams, which
costs measurable throughput on the ingest and ``/assign`` hot paths.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "abstats_http_requests_total", "HTTP requests by route and status class", ["route", "status"]
)
HTTP_LATENCY = Histogram(
    "abstats_http_request_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RequestMetrics:
    """Counts each HTTP request by route template (not raw path: bounded label values) and
    status class, and observes its latency up to the response start."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            if status == 500 and scope.get("state", {}).get("abstats.client_disconnected"):
                status = 499  # the client went away mid-body: not a server error
            route: Any = scope.get("route")
            path = getattr(route, "path", "unmatched")
            HTTP_LATENCY.labels(path).observe(time.perf_counter() - start)
            HTTP_REQUESTS.labels(path, f"{status // 100}xx").inc()


def install_request_metrics(app: FastAPI) -> None:
    app.add_middleware(RequestMetrics)
