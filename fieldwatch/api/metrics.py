"""Prometheus metrics of the API, and the ASGI middleware that records them.

Metrics live in prometheus_client's default registry so ``/metrics`` also shows
whatever else runs in the process (ingest, rules) when ``fieldwatch demo`` hosts
them together. Requests are labelled by route *template* (``/api/v1/alarms/{alarm_id}``),
never by raw path, so ids cannot blow up the label cardinality.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter(
    "fieldwatch_api_requests",
    "HTTP requests served by the API, by method, route template and status code.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "fieldwatch_api_request_duration_seconds",
    "Time to serve an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REFUSALS_HELD = Counter(
    "fieldwatch_api_refusals_held",
    "Refusals the API held before sending them: the client address was past its refusal budget "
    "(fieldwatch.api.tarpit).",
)
UNMATCHED = "<unmatched>"


def exposition() -> tuple[bytes, str]:
    """The text exposition of every registered metric and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts requests and times them (pure ASGI: no body buffering, works with streaming)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_template(scope)
            method = scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(time.perf_counter() - start)


def _route_template(scope: MutableMapping[str, Any]) -> str:
    route = scope.get("route")
    # the template without convertors: ``/devices/{device_id}``, not ``/devices/{device_id:device}``
    return getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED
