"""Liveness and readiness (no authentication, for orchestrators: ``public`` in the permission policy)
and metrics (a token with ``metrics.read``, unless ``FIELDWATCH_API_METRICS_PUBLIC`` opens them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, status
from fastapi.routing import APIRoute

from ..deps import Access, PoolDep, allow_unless_open, public
from ..intake_metrics import refresh as refresh_intake_gauges
from ..metrics import exposition
from ..readiness import database_problem, storage_problem
from ..schemas import Health, Ready
from ._prefix import API_PREFIX

#: How long /readyz waits for a pooled connection before answering 503.
READY_TIMEOUT_S = 2.0

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz(_: Annotated[None, public("health.probe")]) -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Ready,
    summary="The database is reachable and migrated (and whether its background jobs run)",
    responses={503: {"model": Ready, "description": "the database cannot be used"}},
)
def readyz(pool: PoolDep, response: Response, _: Annotated[None, public("health.probe")]) -> Ready:
    problem = database_problem(pool, READY_TIMEOUT_S)
    if problem is not None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Ready(status="unavailable", database=problem, storage="unknown: the database cannot be used")
    storage = storage_problem(pool, READY_TIMEOUT_S)
    if storage is not None:
        return Ready(status="degraded", database="ok", storage=storage)  # still 200: the API serves
    return Ready(status="ready", database="ok")


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(
    pool: PoolDep, _: Annotated[Access | None, allow_unless_open("metrics.read", "api_metrics_public")]
) -> Response:
    refresh_intake_gauges(pool)  # dead letters and held points as stored now
    body, content_type = exposition()
    return Response(body, media_type=content_type)


# The same probes under the API prefix, for clients configured with one base URL (not in the schema).
prefixed_router = APIRouter(prefix=API_PREFIX, include_in_schema=False)
for _route in list(router.routes):
    assert isinstance(_route, APIRoute)  # every route of this router is an endpoint, never a mount
    prefixed_router.add_api_route(
        _route.path, _route.endpoint, response_model=_route.response_model, methods=list(_route.methods or ())
    )
