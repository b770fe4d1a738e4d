"""The FastAPI application: assembly, lifespan (the connection pool) and error mapping.

Routers stay thin; this module is the one place where our exceptions (the domains' own,
:mod:`fwcore.errors`, whichever package raised them) and the database's become HTTP statuses:

================================  ====  =========================================
exception                         code  body
================================  ====  =========================================
:class:`.errors.NotFound`         404   ``{"detail": "alarm 7 does not exist"}``
:class:`.errors.Conflict`         409   ``{"detail": "..."}``
:class:`.errors.Invalid`          422   pydantic-style ``{"detail": [{loc,msg,type}]}``
pool timeout, OperationalError    503   ``{"detail": "database unavailable: ..."}``
================================  ====  =========================================
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool, PoolTimeout

from fwcore.settings import Settings, get_settings

from .errors import ApiError, Invalid, status_of
from .metrics import MetricsMiddleware
from .routes import API_PREFIX, api_router, health

log = logging.getLogger(__name__)
__all__ = ["API_PREFIX", "create_app"]

#: Seconds a request waits for a pooled connection before it is answered 503.
POOL_TIMEOUT_S = 10.0


def _version() -> str:
    try:
        return version("fieldwatch")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def create_app(
    settings: Settings | None = None,
    *,
    pool_max_size: int = 10,
    pool_timeout_s: float = POOL_TIMEOUT_S,
    console: bool = False,
) -> FastAPI:
    """Build the API. The pool opens when the app starts (lifespan) and closes when it stops.

    A database that is down at start does not stop the app: ``/healthz`` answers,
    ``/readyz`` says 503 until the pool can connect. ``console`` also serves the web console at
    ``/`` (:mod:`fieldwatch.console`; once per process).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=pool_max_size,
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection,  # a restarted database costs one retry, not an error
            timeout=pool_timeout_s,
            name="fieldwatch-api",
            open=False,
        )
        pool.open(wait=False)
        app.state.pool = pool
        try:
            yield
        finally:
            await asyncio.to_thread(pool.close)

    app = FastAPI(
        title="fieldwatch",
        version=_version(),
        summary="Equipment telemetry, alarms, tickets and technicians.",
        description="Authenticate with `Authorization: Bearer <token>`; create tokens with "
        "`fieldwatch tokens create --role ROLE`. Each route performs one action of the permission policy; "
        "a refusal (403) says which roles may, or why this object is not yours (`admin` may do everything).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(MetricsMiddleware)
    app.include_router(health.router)
    app.include_router(health.prefixed_router)
    app.include_router(api_router)
    _add_error_handlers(app)
    if console:
        from fieldwatch.console import mount_console

        mount_console(app, settings)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        code = status_of(exc)
        if code == 422 and isinstance(exc, Invalid):
            detail: object = [{"loc": list(exc.loc), "msg": exc.message, "type": "value_error"}]
        else:
            detail = exc.message
        return JSONResponse({"detail": detail}, status_code=code)

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": f"database unavailable: {exc}"}, status_code=503, headers={"Retry-After": "5"})
