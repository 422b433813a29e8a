"""Prometheus metrics of one server, on GET /metrics.

Requests by route and status, request and model latency histograms, the queue depth,
the budget the model last ran at, and the share of components images used. Each app
has its own registry, so two servers in one process (the tests) do not mix counts.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)

from budget_edge.runtime.runtime import InferResult

# Seconds; a Jetson answers one image in milliseconds, a batch of 64 in about a second.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def route_of(path: str) -> str:
    """A few route names, never raw paths: a label per URL would grow without bound."""
    if path.endswith("/infer"):
        return "infer"
    if path.startswith("/v2/health/"):
        return "health"
    if path.startswith("/v2/models/"):
        return "model"
    if path in ("/v2", "/v2/"):
        return "server"
    if path.startswith("/v2/repository/"):
        return "repository"
    if path == "/metrics":
        return "metrics"
    return "other"


class ServerMetrics:
    """The metrics of one app; `middleware(app)` counts every request it answers."""

    def __init__(self, queue_depth: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "budget_edge_requests", "HTTP requests answered", ["route", "code"], registry=r
        )
        self.request_seconds = Histogram(
            "budget_edge_request_seconds",
            "Time from request to response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "budget_edge_model_seconds",
            "Time the model ran per chunk of a request",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        queue = Gauge("budget_edge_queue_depth", "Requests waiting for the model", registry=r)
        queue.set_function(queue_depth)
        self.budget = Gauge(
            "budget_edge_budget", "Budget of the last model run (mean over its images)", registry=r
        )
        self.usage = Summary(
            "budget_edge_image_usage",
            "Share of components each image ran (mean: sum / count)",
            registry=r,
        )
        self.flops_share = Summary(
            "budget_edge_image_flops_share",
            "Executed backbone FLOPs of each image, as a share of the full model",
            registry=r,
        )

    def observe_run(self, result: InferResult, budget: float | None, seconds: float) -> None:
        """Record one model run."""
        self.model_seconds.observe(seconds)
        if budget is not None:
            self.budget.set(budget)
        for usage, share in zip(result.usage.tolist(), result.flops_share.tolist(), strict=True):
            self.usage.observe(usage)
            self.flops_share.observe(share)

    def exposition(self) -> tuple[bytes, str]:
        """The text format Prometheus scrapes, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def middleware(self, app: Any) -> Any:
        """ASGI middleware counting each HTTP response by route and status code."""

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            route = route_of(str(scope.get("path", "")))
            start = time.perf_counter()
            status = [500]  # unless a response starts: the app failed before answering

            async def send_and_note(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_and_note)
            finally:
                self.requests.labels(route, str(status[0])).inc()
                self.request_seconds.labels(route).observe(time.perf_counter() - start)

        return counted
