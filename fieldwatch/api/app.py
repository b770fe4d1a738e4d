"""The FastAPI application: assembly, lifespan (the connection pool) and error mapping.

Routers stay thin; this module is the one place where our exceptions (the domains' own,
:mod:`fwcore.errors`, whichever package raised them) and the database's become HTTP statuses:

================================  ====  =========================================
exception                         code  body
================================  ====  =========================================
:class:`.errors.NotFound`         404   ``{"detail": "alarm 7 does not exist"}``
:class:`.errors.Conflict`         409   ``{"detail": "..."}``
:class:`.errors.Invalid`          422   pydantic-style ``{"detail": [{loc,msg,type}]}``
request validation (pydantic)     422   the same: where and what, never the input
pool timeout, OperationalError    503   ``{"detail": "database unavailable: ..."}``
psycopg ``DataError``             422   a value the database cannot store (never its SQL)
``UnicodeEncodeError``            422   text that is not valid UTF-8
``OverflowError``                 422   a number or time too large to compute with
================================  ====  =========================================

The last three are a last resort: the request models refuse such values first
(:mod:`fwcore.inputs`), and a route that reaches one of them is a gap to close there. They are
logged with their traceback; the caller is told only which kind of value was wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool, PoolTimeout

from fwcore.settings import Settings, get_settings

from .deps import checked_parameters
from .docs import add_offline_docs
from .errors import ApiError, Invalid, status_of
from .guard import RequestGuard, SecurityHeaders
from .metrics import MetricsMiddleware
from .responses import document_errors
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


#: What the caller is told for each late refusal (never the database's own message: it may show SQL).
_UNSTORABLE: dict[type[Exception], str] = {
    psycopg.DataError: "a value is out of the range or format the database can store",
    UnicodeEncodeError: "text must be valid UTF-8 (no unpaired surrogates such as \\ud800)",
    OverflowError: "a number or time is too large",
}


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
        # FIELDWATCH_API_DOCS=off: no schema, no documentation pages (token, public: the guard decides).
        openapi_url=None if settings.api_docs == "off" else "/openapi.json",
        docs_url=None,  # fieldwatch.api.docs serves them without a CDN (below), unless docs are off
        redoc_url=None,
        dependencies=[Depends(checked_parameters)],
    )
    if settings.api_docs != "off":
        add_offline_docs(app)
    app.state.settings = settings
    # Last added runs first: headers and access log around everything, then the guard (rate limits,
    # the token, body limits) before any route reads a byte of the body.
    app.add_middleware(RequestGuard, settings=settings)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(SecurityHeaders, settings=settings)
    app.include_router(health.router)
    app.include_router(health.prefixed_router)
    app.include_router(api_router)
    document_errors(app)
    _add_error_handlers(app)
    if console:
        from fieldwatch.console import mount_console

        mount_console(app, settings)
    return app


def _printable(text: str) -> str:
    """``text`` safe to send as UTF-8 JSON: an unpaired surrogate a message quotes becomes ``\\ud800``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        code = status_of(exc)
        if code == 422 and isinstance(exc, Invalid):
            detail: object = [{"loc": list(exc.loc), "msg": _printable(exc.message), "type": "value_error"}]
        else:
            detail = _printable(exc.message)
        return JSONResponse({"detail": detail}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and what, never the input itself: it may be a secret (a webhook's, a token's name
        # field holding one) or text that cannot be encoded back (an unpaired surrogate).
        detail = [
            {"loc": list(e["loc"]), "msg": _printable(e["msg"].removeprefix("Value error, ")), "type": e["type"]}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(psycopg.DataError)
    @app.exception_handler(UnicodeEncodeError)
    @app.exception_handler(OverflowError)
    async def unstorable_value(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: a value from the request was refused late", request.method, request.url.path, exc_info=exc)
        msg = _UNSTORABLE.get(type(exc), _UNSTORABLE[psycopg.DataError])
        if isinstance(exc, psycopg.DataError) and "NUL" in str(exc):
            msg = "text must not contain NUL characters (\\u0000)"
        detail = [
            {
                "loc": ["body"] if request.method in ("POST", "PUT", "PATCH") else ["query"],
                "msg": msg,
                "type": "value_error",
            }
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": f"database unavailable: {exc}"}, status_code=503, headers={"Retry-After": "5"})
